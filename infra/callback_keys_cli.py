"""``stratus callback-key``: a tenant's callback signing keys, from an operator's shell.

* ``stratus callback-key rotate --tenant T [--grace SECONDS]``: a new key (printed
  once, with its ``kid``); the tenant's previous keys keep verifying for ``--grace``
  seconds (default 86400; ``0`` retires them now: a leaked secret). A tenant created
  before per-tenant keys (signed with the stack-wide fallback key) gets its first key:
  that is the migration.
* ``stratus callback-key create --tenant T``: the first key of a new tenant
  (``stratus tenant create`` and the local cloud's provisioning do this).
* ``stratus callback-key list --tenant T``: the key ids and their validity, never a
  secret.

The table: ``--table``, ``--stack NAME`` (its ``CallbackKeysTableName`` output),
``STRATUS_CALLBACK_KEYS_TABLE``, or the running local cloud (``.stratus/local.json``:
its table and AWS endpoint). Rotations are audited (``callback_key.rotated``, actor
``operator``) when the audit table is known the same ways (``--audit-table``,
``AuditTableName``, ``STRATUS_AUDIT_TABLE``, the local cloud).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from infra.operator_tables import audit_table_name, operator_clients, table_name
from stratus.signing_keys import (
    DEFAULT_GRACE_S,
    MAX_GRACE_S,
    DynamoSigningKeyStore,
    SigningKey,
    SigningKeys,
)

TABLE_OUTPUT = "CallbackKeysTableName"


def _clients(args: argparse.Namespace) -> Any:
    return operator_clients(args, "STRATUS_CALLBACK_KEYS_TABLE")


def _table(args: argparse.Namespace, clients: Any) -> str:
    return table_name(
        args,
        clients,
        output=TABLE_OUTPUT,
        env_var="STRATUS_CALLBACK_KEYS_TABLE",
        local="callback_keys",
    )


def _audit_table(args: argparse.Namespace, clients: Any) -> str:
    return audit_table_name(args, clients)


def _keys(args: argparse.Namespace, clients: Any) -> SigningKeys:
    return SigningKeys(DynamoSigningKeyStore(clients.table(_table(args, clients))))


def _tenant(args: argparse.Namespace) -> str:
    tenant = str(args.tenant).strip()
    if not tenant or len(tenant) > 128:
        raise SystemExit("--tenant must be a tenant id")
    return tenant


def _show(key: SigningKey, tenant: str, as_json: bool, extra: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps({"tenant_id": tenant, "kid": key.kid, "secret": key.secret, **extra}))
        return
    print(f"tenant_id: {tenant}")
    print(f"kid:       {key.kid}")
    print(f"secret:    {key.secret}")
    for name, value in extra.items():
        print(f"{name}: {value}")
    print(
        "Give the secret to the tenant's callback receivers now: it is shown once.",
        file=sys.stderr,
    )


def _audit(args: argparse.Namespace, clients: Any, tenant: str, details: dict[str, Any]) -> None:
    name = _audit_table(args, clients)
    if not name:
        return
    from stratus.audit import AuditTrail
    from stratus.audit_dynamo import DynamoAuditStore

    AuditTrail(DynamoAuditStore(clients.table(name))).record_now(
        tenant, "callback_key.rotated", actor="operator", details=details
    )


def _rotate(args: argparse.Namespace) -> int:
    if not 0 <= args.grace <= MAX_GRACE_S:
        raise SystemExit(f"--grace must be 0..{MAX_GRACE_S} seconds")
    tenant = _tenant(args)
    clients = _clients(args)
    key, previous = _keys(args, clients).rotate(tenant, args.grace)
    _audit(
        args,
        clients,
        tenant,
        {"kid": key.kid, "previous": [p.kid for p in previous], "grace_s": args.grace},
    )
    retired = [{"kid": p.kid, "valid_until": p.valid_until} for p in previous]
    _show(key, tenant, args.json, {"previous": retired})
    return 0


def _create(args: argparse.Namespace) -> int:
    tenant = _tenant(args)
    key = _keys(args, _clients(args)).create_for(tenant)
    _show(key, tenant, args.json, {})
    return 0


def _list(args: argparse.Namespace) -> int:
    tenant = _tenant(args)
    keys = _keys(args, _clients(args)).store.keys(tenant)
    rows = [k.public() for k in keys]
    if args.json:
        print(json.dumps({"tenant_id": tenant, "keys": rows}))
    else:
        for row in rows:
            until = row["valid_until"]
            print(f"{row['kid']}  created {row['created_at']:.0f}  valid until {until or '-'}")
    return 0


def first_key(
    tenant_id: str, *, stack: str | None = None, table: str | None = None
) -> SigningKey | None:
    """A new tenant's first signing key (``stratus tenant create`` calls this); None when
    no callback keys table is known (``--stack``, ``STRATUS_CALLBACK_KEYS_TABLE`` or the
    local cloud), so the tenant falls back to the stack-wide key until a rotation."""
    args = argparse.Namespace(table=table, stack=stack)
    clients = _clients(args)
    try:
        name = _table(args, clients)
    except SystemExit:
        return None
    return SigningKeys(DynamoSigningKeyStore(clients.table(name))).create_for(tenant_id)


def add_parser(commands: Any) -> None:
    """Register ``stratus callback-key`` on the ``stratus`` command's subparsers."""
    group = commands.add_parser("callback-key", help="tenants' callback signing keys")
    sub = group.add_subparsers(dest="callback_key_command", required=True)
    for name, run, text in (
        ("rotate", _rotate, "a new signing key; the old ones verify for --grace seconds"),
        ("create", _create, "a new tenant's first signing key"),
        ("list", _list, "the tenant's key ids and validity (never a secret)"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--tenant", required=True, help="the tenant id")
        where = command.add_mutually_exclusive_group()
        where.add_argument("--table", help="the callback keys table name")
        where.add_argument("--stack", help="a deployed stack (its outputs name the table)")
        command.add_argument("--audit-table", help="the audit table (rotations are audited)")
        command.add_argument("--json", action="store_true", help="print JSON")
        if name == "rotate":
            command.add_argument(
                "--grace",
                type=int,
                default=DEFAULT_GRACE_S,
                help=f"seconds the previous keys keep verifying (default {DEFAULT_GRACE_S})",
            )
        command.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.callback_keys_cli ...`` (the same as ``stratus callback-key ...``)."""
    parser = argparse.ArgumentParser(prog="stratus")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["callback-key", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

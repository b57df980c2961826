"""``stratus key`` and ``stratus tenant suspend|resume``: API keys from an operator's shell.

* ``stratus key create --tenant T --scopes invoke,jobs [--role R] [--customer C]
  [--expires 2027-01-01T00:00:00Z]``: a new key, printed once with its ``key_id``;
* ``stratus key list --tenant T``: the tenant's keys (never a key or its hash);
* ``stratus key revoke --tenant T KEY_ID``: the key stops within the authorizer cache
  window (60 s by default);
* ``stratus key rotate --tenant T KEY_ID [--grace SECONDS]``: a new key with the same
  scopes, role and customer; the old one keeps working for ``--grace`` seconds
  (default 86400), then stops;
* ``stratus tenant suspend --tenant T`` / ``stratus tenant resume --tenant T``: every
  key of a suspended tenant is refused (401) until it resumes.

The tenants table: ``--table``, ``--stack NAME`` (its ``TenantsTableName`` output; AWS
credentials from the environment), ``STRATUS_TENANTS_TABLE``, or the running local
cloud (``.stratus/local.json``: its table and AWS endpoint). Every change is audited
(``key.created``, ``key.rotated``, ``key.revoked``, ``tenant.suspended``,
``tenant.resumed``; actor ``operator``) when the audit table is known the same ways
(``--audit-table``, the ``AuditTableName`` output, ``STRATUS_AUDIT_TABLE``, the local
cloud). Exit codes: 0 done, 1 refused (unknown tenant or key, a suspended tenant), 2
bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.operator_tables import audit_table_name, operator_clients, table_name
from stratus.errors import StratusError
from stratus.tenant_keys import DEFAULT_GRACE_S, MAX_GRACE_S, SCOPES, KeyInfo, key_scopes
from stratus.tenants import TenantStore

TABLE_OUTPUT = "TenantsTableName"


def _clients(args: argparse.Namespace) -> Any:
    return operator_clients(args, "STRATUS_TENANTS_TABLE")


def _table(args: argparse.Namespace, clients: Any) -> str:
    return table_name(
        args, clients, output=TABLE_OUTPUT, env_var="STRATUS_TENANTS_TABLE", local="tenants"
    )


def _audit_table(args: argparse.Namespace, clients: Any) -> str:
    return audit_table_name(args, clients)


def _audit(
    args: argparse.Namespace, clients: Any, tenant: str, type: str, details: dict[str, Any]
) -> None:
    from stratus.audit import AuditTrail

    name = _audit_table(args, clients)
    store = None
    if name:
        from stratus.audit_dynamo import DynamoAuditStore

        store = DynamoAuditStore(clients.table(name))
    AuditTrail(store).record_now(tenant, type, actor="operator", details=details)


def _tenant(args: argparse.Namespace) -> str:
    tenant = str(args.tenant).strip()
    if not tenant or len(tenant) > 128:
        raise SystemExit("--tenant must be a tenant id")
    return tenant


def _scopes(text: str) -> tuple[str, ...]:
    names = [s for s in text.replace(",", " ").split() if s]
    if names == ["all"]:
        return SCOPES
    try:
        return key_scopes(names)
    except ValueError as problem:
        raise SystemExit(f"--scopes: {problem}") from None


def _expires(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"--expires must be an ISO 8601 time, not {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _key_id(args: argparse.Namespace) -> str:
    key_id = args.key_id or args.key_id_option
    if not key_id:
        raise SystemExit("give the key id (KEY_ID or --key-id)")
    return str(key_id)


def _show_key(info: KeyInfo, key: str | None, as_json: bool, extra: dict[str, Any]) -> None:
    body = {**info.model_dump(mode="json"), **extra}
    if key is not None:
        body["key"] = key
    if as_json:
        print(json.dumps(body))
        return
    for name, value in body.items():
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        print(f"{name + ':':<25} {value if value is not None else '-'}")
    if key is not None:
        print("Store the key now: it is shown once and only its hash is kept.", file=sys.stderr)


def _store(args: argparse.Namespace) -> tuple[TenantStore, Any]:
    clients = _clients(args)
    return TenantStore(_table(args, clients), clients.client("dynamodb")), clients


def _create(args: argparse.Namespace) -> int:
    tenant, scopes, expires = _tenant(args), _scopes(args.scopes), _expires(args.expires)
    store, clients = _store(args)
    try:
        info, key = store.create_key(
            tenant, scopes, role=args.role, customer_id=args.customer, expires_at=expires
        )
    except ValueError as problem:
        raise SystemExit(str(problem)) from None
    details = {
        "key_id": info.key_id,
        "scopes": list(info.scopes),
        "role": info.role,
        "customer_id": info.customer_id,
        "expires_at": info.expires_at,
    }
    _audit(args, clients, tenant, "key.created", details)
    _show_key(info, key, args.json, {})
    return 0


def _list(args: argparse.Namespace) -> int:
    tenant = _tenant(args)
    store, _ = _store(args)
    keys = store.list_keys(tenant)
    if args.json:
        print(json.dumps({"keys": [k.model_dump(mode="json") for k in keys]}))
        return 0
    print(f"{'key_id':<25} {'status':<8} {'scopes':<50} {'role':<12} {'customer':<12} expires_at")
    for k in keys:
        print(
            f"{k.key_id:<25} {k.status:<8} {' '.join(k.scopes):<50} {k.role or '-':<12} "
            f"{k.customer_id or '-':<12} {k.expires_at or '-'}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    tenant, key_id = _tenant(args), _key_id(args)
    store, clients = _store(args)
    info = store.revoke_key(tenant, key_id)
    _audit(args, clients, tenant, "key.revoked", {"key_id": info.key_id})
    _show_key(info, None, args.json, {})
    return 0


def _rotate(args: argparse.Namespace) -> int:
    if not 0 <= args.grace <= MAX_GRACE_S:
        raise SystemExit(f"--grace must be 0..{MAX_GRACE_S} seconds")
    tenant, key_id = _tenant(args), _key_id(args)
    store, clients = _store(args)
    rotation = store.rotate_key(tenant, key_id, args.grace)
    details = {
        "key_id": rotation.old.key_id,
        "new_key_id": rotation.new.key_id,
        "old_key_expires_at": rotation.old.expires_at,
    }
    _audit(args, clients, tenant, "key.rotated", details)
    extra = {"replaces": rotation.old.key_id, "replaced_key_expires_at": rotation.old.expires_at}
    _show_key(rotation.new, rotation.key, args.json, extra)
    return 0


def _suspension(suspend: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        tenant = _tenant(args)
        store, clients = _store(args)
        keys = store.suspend(tenant) if suspend else store.resume(tenant)
        type = "tenant.suspended" if suspend else "tenant.resumed"
        _audit(args, clients, tenant, type, {"keys": keys})
        status = "suspended" if suspend else "active"
        if args.json:
            print(json.dumps({"tenant_id": tenant, "status": status, "keys": keys}))
        else:
            print(f"tenant {tenant}: {status} ({keys} key(s) marked)")
        return 0

    return run


def _safe(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A refusal (unknown tenant or key, suspended tenant) is exit 1 with its code, not a
    traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except StratusError as refused:
            print(f"{refused.code}: {refused.message}", file=sys.stderr)
            return 1

    return run


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True, help="the tenant id")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--table", help="the tenants table name")
    where.add_argument("--stack", help="a deployed Stratus stack to read the table name from")
    parser.add_argument("--audit-table", help="the audit table (default: found like the table)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--facts", type=Path, default=None, help=argparse.SUPPRESS)


def _key_id_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key_id", nargs="?", help="the key's id (key_...)")
    parser.add_argument("--key-id", dest="key_id_option", help="the key's id (or positional)")


def add_parser(commands: Any) -> None:
    """``stratus key create|list|revoke|rotate``."""
    key = commands.add_parser("key", help="manage a tenant's API keys")
    sub = key.add_subparsers(dest="key_command", required=True)
    create = sub.add_parser("create", help="create a key and print it (once)")
    _where(create)
    create.add_argument(
        "--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)} (or 'all')"
    )
    create.add_argument("--role", help="the role its tools are permitted for")
    create.add_argument("--customer", help="the end customer the key is bound to")
    create.add_argument("--expires", help="ISO 8601 time after which the key is refused")
    create.set_defaults(func=_safe(_create))
    listing = sub.add_parser("list", help="list the tenant's keys (never a key or its hash)")
    _where(listing)
    listing.set_defaults(func=_safe(_list))
    revoke = sub.add_parser("revoke", help="revoke a key (refused within the cache window)")
    _where(revoke)
    _key_id_args(revoke)
    revoke.set_defaults(func=_safe(_revoke))
    rotate = sub.add_parser("rotate", help="a new key; the old one valid for --grace seconds")
    _where(rotate)
    _key_id_args(rotate)
    rotate.add_argument("--grace", type=int, default=DEFAULT_GRACE_S, help="seconds (86400)")
    rotate.set_defaults(func=_safe(_rotate))


def add_tenant_parsers(tenant_commands: Any) -> None:
    """``stratus tenant suspend|resume`` on the existing ``stratus tenant`` subcommands."""
    suspend = tenant_commands.add_parser("suspend", help="refuse every key of the tenant")
    _where(suspend)
    suspend.set_defaults(func=_safe(_suspension(True)))
    resume = tenant_commands.add_parser("resume", help="let a suspended tenant's keys work again")
    _where(resume)
    resume.set_defaults(func=_safe(_suspension(False)))


def build_parser() -> argparse.ArgumentParser:
    """These commands alone (tests; ``infra.cli`` wires them into ``stratus``)."""
    parser = argparse.ArgumentParser(prog="stratus")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser(commands)
    tenant = commands.add_parser("tenant", help="manage tenants")
    add_tenant_parsers(tenant.add_subparsers(dest="tenant_command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))

"""Which table an operator command works on, and the AWS clients to reach it.

The operator commands (``stratus key``, ``stratus callback-key``, ...) take a table
from ``--table``, from a deployed stack's outputs (``--stack``), from its
``STRATUS_*`` variable, or from the running local cloud (``.stratus/local.json``,
whose AWS endpoint they then use). The audit table that records their changes is
found the same way.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from infra.paths import REPO_ROOT

LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
AUDIT_OUTPUT = "AuditTableName"


def local_facts(path: Path | None = None) -> dict[str, Any]:
    """The running local cloud's facts, or ``{}`` when none is running."""
    try:
        data: dict[str, Any] = json.loads((path or LOCAL_FACTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data


def _facts(args: argparse.Namespace) -> dict[str, Any]:
    return local_facts(getattr(args, "facts", None))


def operator_clients(args: argparse.Namespace, env_var: str) -> Any:
    """AWS clients; pointed at the local cloud when no table, stack or ``env_var`` is given."""
    from stratus.aws import AwsClients

    facts = _facts(args)
    given = args.table or args.stack or os.environ.get(env_var)
    if not given and facts and not os.environ.get("AWS_ENDPOINT_URL"):
        os.environ["AWS_ENDPOINT_URL"] = str(facts.get("aws_endpoint_url", ""))
        os.environ.setdefault("AWS_DEFAULT_REGION", str(facts.get("region", "us-east-1")))
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(name, "local")
    return AwsClients()


def find_output(clients: Any, stack: str, name: str) -> str | None:
    """The deployed stack's output ``name`` (None when it has none)."""
    stacks = clients.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    for output in stacks[0].get("Outputs", []):
        if output["OutputKey"] == name:
            return str(output["OutputValue"])
    return None


def stack_output(clients: Any, stack: str, name: str) -> str:
    """The deployed stack's output ``name``; exits with a message when it has none."""
    value = find_output(clients, stack, name)
    if value is None:
        raise SystemExit(f"stack {stack} has no {name} output")
    return value


def table_name(
    args: argparse.Namespace, clients: Any, *, output: str, env_var: str, local: str
) -> str:
    """``--table``, the stack's ``output``, ``env_var``, or the local cloud's ``local`` table."""
    if args.table:
        return str(args.table)
    if args.stack:
        return stack_output(clients, args.stack, output)
    table = os.environ.get(env_var, "") or str(_facts(args).get("tables", {}).get(local, ""))
    if not table:
        raise SystemExit(f"give --table, --stack, set {env_var}, or start stratus dev")
    return table


def audit_table_name(args: argparse.Namespace, clients: Any) -> str:
    """Where the command's change is audited ("" when no audit table is known)."""
    if args.audit_table:
        return str(args.audit_table)
    if args.stack:
        try:
            return stack_output(clients, args.stack, AUDIT_OUTPUT)
        except SystemExit:
            return ""
    if args.table:  # a table given by hand: its audit table only by hand too
        return os.environ.get("STRATUS_AUDIT_TABLE", "")
    return os.environ.get("STRATUS_AUDIT_TABLE", "") or str(
        _facts(args).get("tables", {}).get("audit", "")
    )

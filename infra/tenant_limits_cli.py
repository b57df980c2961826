"""``stratus tenant limits``: a tenant's own request rate and queued-jobs cap.

``stratus tenant limits --tenant T --rps N --burst M [--max-queued-jobs J]`` writes them
on the tenant's ``LIMITS#<tenant>`` item of the budgets table (beside its dollar
limits; :mod:`stratus.tenant_limits`), against a stack (``--stack``), a table
(``--table``) or the local cloud (``STRATUS_BUDGETS_TABLE`` and ``AWS_ENDPOINT_URL``).
Functions see the change within a minute (their per-process copy of the item). The
change is recorded in the tenant's audit trail (``budget.limits_changed``). Without an
option it prints the tenant's limits in effect.

The ``tenant`` command group lives in :mod:`infra.cli`; it calls
:func:`add_tenant_commands` with its subparsers.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from infra.operator_tables import find_output
from stratus.aws import AwsClients

BUDGETS_OUTPUT = "BudgetsTableName"
AUDIT_OUTPUT = "AuditTableName"


def _tables(args: argparse.Namespace, clients: AwsClients) -> tuple[str, str]:
    """The budgets table (required) and the audit table ("" if none is known)."""
    if args.table:
        return str(args.table), os.environ.get("STRATUS_AUDIT_TABLE", "")
    if args.stack:
        budgets = find_output(clients, args.stack, BUDGETS_OUTPUT)
        if budgets is None:
            raise SystemExit(f"stack {args.stack} has no {BUDGETS_OUTPUT} output")
        return budgets, find_output(clients, args.stack, AUDIT_OUTPUT) or ""
    budgets = os.environ.get("STRATUS_BUDGETS_TABLE", "")
    if not budgets:
        raise SystemExit("give --table, --stack, or set STRATUS_BUDGETS_TABLE")
    return budgets, os.environ.get("STRATUS_AUDIT_TABLE", "")


def _positive(value: str, flag: str, kind: type[float] | type[int]) -> float | int:
    try:
        number = kind(value)
    except ValueError:
        raise SystemExit(f"{flag} must be a positive number") from None
    if number <= 0:
        raise SystemExit(f"{flag} must be a positive number")
    return number


def tenant_limits(args: argparse.Namespace) -> int:
    from decimal import Decimal

    from stratus.composition import Runtime
    from stratus.config import Settings
    from stratus.tenant_limits import BURST_FIELD, MAX_QUEUED_FIELD, RPS_FIELD

    changes: dict[str, Any] = {}
    if args.rps is not None:
        changes[RPS_FIELD] = Decimal(str(_positive(args.rps, "--rps", float)))
    if args.burst is not None:
        changes[BURST_FIELD] = int(_positive(args.burst, "--burst", int))
    if args.max_queued_jobs is not None:
        changes[MAX_QUEUED_FIELD] = int(_positive(args.max_queued_jobs, "--max-queued-jobs", int))
    clients = AwsClients()
    budgets, audit = _tables(args, clients)
    runtime = Runtime(Settings(budgets_table=budgets, audit_table=audit), clients=clients)
    if changes:
        runtime.budgets.set_tenant_limits(
            args.tenant, daily_usd=None, monthly_usd=None, extra=changes
        )
        runtime.audit.record_now(
            args.tenant,
            "budget.limits_changed",
            details={k: str(v) for k, v in changes.items()},
        )
    limits = runtime.tenant_limits
    rate = limits.rate(args.tenant)
    print(
        json.dumps(
            {
                "tenant_id": args.tenant,
                "rps": rate.rps if rate else None,
                "burst": rate.burst if rate else None,
                "max_queued_jobs": limits.max_queued_jobs(args.tenant),
            }
        )
    )
    return 0


def add_tenant_commands(tenant_commands: Any) -> None:
    """``stratus tenant limits`` on the ``tenant`` group's subparsers."""
    limits = tenant_commands.add_parser(
        "limits", help="set or show a tenant's request rate and queued-jobs cap"
    )
    limits.add_argument("--tenant", required=True)
    limits.add_argument("--rps", help="requests per second on average")
    limits.add_argument("--burst", help="requests at once (the bucket's size)")
    limits.add_argument("--max-queued-jobs", help="jobs queued or running at most")
    where = limits.add_mutually_exclusive_group()
    where.add_argument("--table", help="the budgets table name")
    where.add_argument("--stack", help="a deployed Stratus stack to read the table from")
    limits.set_defaults(func=tenant_limits)

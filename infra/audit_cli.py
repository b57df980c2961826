"""``stratus audit``: read the tenant's audit trail over the HTTP API (so scopes apply).

* ``stratus audit [--since ISO] [--type T ...] [--limit N] [--json]``: the events,
  oldest first from ``--since`` (default: 24 hours back), following every page up to
  ``--limit`` events in all (default 100); ``--type`` repeats or takes a comma list.

It talks to the running local cloud by default (URL and the demo tenant's key from
``.stratus/local.json``); ``--api URL --key KEY`` reaches a stage. The key needs the
``audit:read`` scope. Exit codes: 0 done, 1 the API refused (its error is printed), 2 no
API answers or bad usage.

:func:`record_operator_event` is how an operator command (``stratus budget set``)
writes its event (actor ``operator``) straight to the audit table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from infra.operator_tables import find_output
from infra.review_cli import LOCAL_FACTS, ApiRefused, ReviewApi, Unreachable

#: Events one page asks for (the API's maximum).
PAGE = 200
DEFAULT_LIMIT = 100
#: The stack output that names the audit table (``stratus budget set --stack``).
AUDIT_OUTPUT = "AuditTableName"


def _connect(args: argparse.Namespace) -> ReviewApi:
    url, key = args.api, args.key
    if not url or not key:
        try:
            from infra.local.facts import load_facts

            facts = load_facts(args.facts)
        except (OSError, ValueError):
            raise Unreachable(
                f"no local cloud is running ({args.facts} not found or unreadable); start one "
                "with `stratus dev`, or pass --api URL --key KEY"
            ) from None
        url, key = url or facts.get("api_url"), key or facts.get("demo_tenant_key")
        if not url or not key:
            raise Unreachable(f"{args.facts} names no api_url / demo_tenant_key")
    return ReviewApi(str(url), str(key))


def fetch(api: ReviewApi, *, since: str | None, types: list[str], limit: int) -> dict[str, Any]:
    """Up to ``limit`` events, every page followed; the last page's ``since``."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    page: dict[str, Any] = {}
    while len(events) < limit:
        query: dict[str, Any] = {"since": since, "limit": min(PAGE, limit - len(events))}
        if types:
            query["type"] = ",".join(types)
        if cursor:
            query["cursor"] = cursor
        page = api.call("GET", "/v1/audit", query=query)
        events.extend(page["events"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return {"events": events, "next_cursor": cursor, "since": page.get("since")}


def print_events(events: list[dict[str, Any]], out: TextIO) -> None:
    if not events:
        print("no audit events", file=out)
    for e in events:
        details = json.dumps(e.get("details") or {}, sort_keys=True, separators=(",", ":"))
        print(f"{e['at']}  {e['type']:<22} {e['actor']:<24} {details}", file=out)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if not 1 <= args.limit <= 10_000:
        print("stratus audit: --limit must be within 1..10000", file=sys.stderr)
        return 2
    types = [t.strip() for value in args.type or () for t in value.split(",") if t.strip()]
    found = fetch(_connect(args), since=args.since, types=types, limit=args.limit)
    if args.json:
        print(json.dumps(found, indent=2), file=out)
    else:
        print_events(found["events"], out)
    return 0


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        return _run(args, out)
    except Unreachable as error:
        print(f"stratus audit: {error}", file=sys.stderr)
        return 2
    except ApiRefused as error:
        print(f"stratus audit: {error}", file=sys.stderr)
        return 1


def add_parser(commands: Any) -> None:
    """Register ``audit`` on the ``stratus`` command's sub-parsers."""
    audit = commands.add_parser("audit", help="read the tenant's audit trail (scope audit:read)")
    audit.add_argument("--since", help="ISO 8601 time to start from (default: 24 hours ago)")
    audit.add_argument(
        "--type", action="append", help="only these event types (repeat, or a comma list)"
    )
    audit.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"at most this many (default {DEFAULT_LIMIT})",
    )
    audit.add_argument("--json", action="store_true", help="print the events as JSON")
    audit.add_argument("--api", metavar="URL", help="the API (default: the local cloud's)")
    audit.add_argument("--key", help="a tenant key with audit:read (default: the demo's)")
    audit.add_argument("--facts", type=Path, default=LOCAL_FACTS, help=argparse.SUPPRESS)
    audit.set_defaults(func=main)


def audit_table(clients: Any, stack: str | None = None) -> str:
    """The audit table: ``STRATUS_AUDIT_TABLE``, or the stack's ``AuditTableName`` output;
    empty when neither names one (the event is then only logged)."""
    if os.environ.get("STRATUS_AUDIT_TABLE"):
        return os.environ["STRATUS_AUDIT_TABLE"]
    if stack:
        return find_output(clients, stack, AUDIT_OUTPUT) or ""
    return ""


def record_operator_event(
    clients: Any,
    tenant_id: str,
    type: str,
    details: Mapping[str, Any],
    *,
    stack: str | None = None,
) -> None:
    """Write one operator event (``budget.limits_changed``, ...) to the audit trail now."""
    from stratus.audit import AuditTrail
    from stratus.audit_dynamo import DynamoAuditStore
    from stratus.config import Settings

    name = audit_table(clients, stack)
    days = Settings().audit_retention_days  # STRATUS_AUDIT_RETENTION_DAYS, else the default
    store = DynamoAuditStore(clients.table(name), retention_days=days) if name else None
    AuditTrail(store).record_now(tenant_id, type, actor="operator", details=details)

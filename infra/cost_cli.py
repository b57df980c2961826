"""``stratus cost``: cost and tokens by agent, model and day, in the terminal.

    stratus cost                      # the running local cloud (.stratus/local.json)
    stratus cost --stack Stratus-dev  # a deployed stack (its BudgetsTableName output)
    stratus cost --days 30 --tenant <id> --json

The figures are the usage the budget items carry (:mod:`infra.cost_report`, the
items ``GET /v1/usage`` reads): per model across tenants, or per agent for one
tenant (``--tenant``). One ``BatchGetItem`` per 100 agent-days.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

from infra.cost_report import CostReport, cost_report, day_range, known_agents
from infra.operator_tables import operator_clients, table_name

BUDGETS_OUTPUT = "BudgetsTableName"
BUDGETS_ENV = "STRATUS_BUDGETS_TABLE"
BLOCKS = "▁▂▃▄▅▆▇█"
ZERO = "·"


def sparkline(values: list[float]) -> str:
    """One unicode block per value, scaled to the largest; a dot for zero."""
    top = max(values, default=0.0)
    if top <= 0:
        return ZERO * len(values)
    out = []
    for value in values:
        if value <= 0:
            out.append(ZERO)
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(value / top * (len(BLOCKS) - 1) + 0.5))])
    return "".join(out)


def _usd(value: Decimal | str | float) -> str:
    return f"${Decimal(str(value)):,.6f}"


def render(report: CostReport, out: Any, *, source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False, soft_wrap=False, width=120)
    days = report.days
    who = f"tenant {report.tenant}" if report.tenant else "all tenants"
    title = f"Stratus cost, {days[0]} .. {days[-1]} ({len(days)} days, {who}, {source})"
    agents = report.by_agent()
    if not agents:
        console.print(f"{title}\nNo usage recorded in these days.")
        return

    console.print(title, style="bold")
    summary = Table()
    summary.add_column("agent", style="bold")
    summary.add_column("calls", justify="right")
    summary.add_column("tokens", justify="right")
    summary.add_column("cost", justify="right")
    summary.add_column("per call", justify="right")
    summary.add_column(f"cost/day ({len(days)}d)", style="green")
    summary.add_column("tokens/day", style="cyan")
    for agent, row in agents.items():
        summary.add_row(
            agent,
            f"{row['calls']:,}",
            f"{row['tokens']:,}",
            _usd(row["cost_usd"]),
            _usd(row["cost_per_call_usd"]),
            sparkline(row["daily_cost_usd"]),
            sparkline(row["daily_tokens"]),
        )
    summary.add_section()
    summary.add_row(
        "total",
        f"{sum(r['calls'] for r in agents.values()):,}",
        f"{sum(r['tokens'] for r in agents.values()):,}",
        _usd(report.total_usd),
        "",
        "",
        "",
        style="bold",
    )
    console.print(summary)

    models = Table(title="By agent and model", title_justify="left")
    for name in ("agent", "model"):
        models.add_column(name)
    for name in ("calls", "input", "cached", "output", "reasoning", "cost"):
        models.add_column(name, justify="right")
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for item in report.rows:
        into = totals.setdefault((item.agent, item.model), {})
        for counter, value in item.counts.items():
            into[counter] = into.get(counter, 0) + int(value)
    for (agent, model), counts in sorted(totals.items()):
        models.add_row(
            agent,
            model,
            f"{counts.get('calls', 0):,}",
            f"{counts.get('input_tokens', 0):,}",
            f"{counts.get('cached_input_tokens', 0):,}",
            f"{counts.get('output_tokens', 0):,}",
            f"{counts.get('reasoning_tokens', 0):,}",
            _usd(Decimal(counts.get("cost_nusd", 0)) / Decimal(1_000_000_000)),
        )
    console.print(models)

    daily = Table(title="By day", title_justify="left")
    daily.add_column("day")
    daily.add_column("calls", justify="right")
    daily.add_column("tokens", justify="right")
    daily.add_column("cost", justify="right")
    for day in days:
        mine = [row for row in report.rows if row.day == day]
        daily.add_row(
            day,
            f"{sum(int(r.counts.get('calls', 0)) for r in mine):,}",
            f"{sum(r.tokens for r in mine):,}",
            _usd(sum((r.cost_usd for r in mine), Decimal(0))),
        )
    console.print(daily)


def _cost(args: argparse.Namespace) -> int:
    from stratus.gateway_stores.dynamo import DynamoBudgetStore

    if args.days < 1 or args.days > 400:
        raise SystemExit("--days must be 1-400 (budget items keep a day's usage 400 days)")
    clients = operator_clients(args, BUDGETS_ENV)
    table = table_name(args, clients, output=BUDGETS_OUTPUT, env_var=BUDGETS_ENV, local="budgets")
    report = cost_report(
        DynamoBudgetStore(clients.table(table)),
        agents=known_agents(),
        days=day_range(args.days),
        tenant=args.tenant or None,
    )
    if args.json:
        print(json.dumps({"table": table, **report.as_json()}, indent=2))
        return 0
    source = f"stack {args.stack}" if args.stack else f"table {table}"
    render(report, sys.stdout, source=source)
    return 0


def add_parser(commands: Any) -> None:
    cost = commands.add_parser(
        "cost", help="cost and tokens by agent, model and day (a stack or the local cloud)"
    )
    cost.add_argument("--days", type=int, default=7, help="how many days back (default 7)")
    cost.add_argument("--tenant", help="one tenant's usage (per agent) instead of all tenants")
    where = cost.add_mutually_exclusive_group()
    where.add_argument("--stack", help="a deployed Stratus stack to read the budgets table from")
    where.add_argument("--table", help="the budgets table name")
    cost.add_argument("--json", action="store_true", help="print JSON")
    cost.set_defaults(func=_cost)

"""Locust's CSV files -> the run's summary (JSON) and its Markdown report.

Locust writes ``<prefix>_stats.csv`` (one row per request name, then ``Aggregated``)
and ``<prefix>_failures.csv`` (one row per name and error). The scenarios report a
failed request as ``ApiError('<code> (HTTP <status>)')`` (see ``locustfile``), so the
code is read back from the error text; any other exception (a refused connection,
a timeout) is named by its class. Whole tasks (a conversation, a job to its end) are
rows of request type ``TASK``: they are reported apart, because counting them with
the requests they are made of would count those twice, and Locust's ``Aggregated``
row (which does) is not used.

Cost per task comes from the responses (``cost_usd`` of an answer, a session's turns,
a finished job), summed per scenario by the locustfile; the tenant's spend from
``GET /v1/usage`` before and after the run is shown beside it as the billed check.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

TASK = "TASK"
_REPR = re.compile(r"^(?P<cls>\w+)\((?P<q>['\"])(?P<msg>.*)(?P=q),?\)$", re.DOTALL)
#: An error code (``throttled``) or, for a client-side failure, an exception's class name.
_CODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Error classes whose message starts with the API's error code.
_CODED = {"ApiError", "CatchResponseError"}


def error_code(error: str) -> str:
    """The error code of one failures-CSV ``Error`` cell.

    >>> error_code("ApiError('throttled (HTTP 429)')")
    'throttled'
    >>> error_code("ConnectionRefusedError(111, 'Connection refused')")
    'ConnectionRefusedError'
    """
    text = error.strip()
    found = _REPR.match(text)
    if found and found["cls"] in _CODED:
        first = found["msg"].split(" ", 1)[0]
        return first if _CODE.match(first) else "unknown"
    head = re.match(r"^(\w+)\(", text)
    if head:
        return head.group(1)
    first = text.split(" ", 1)[0] if text else ""
    return first if _CODE.match(first) else "unknown"


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0  # Locust writes "N/A" for percentiles of a name without a sample


@dataclass(frozen=True)
class Row:
    """One request name of the stats CSV."""

    type: str
    name: str
    count: int
    failures: int
    rps: float
    p50: float
    p90: float
    p99: float
    average: float
    maximum: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.count if self.count else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "error_rate": round(self.error_rate, 4)}


def read_stats(path: Path) -> list[Row]:
    """The per-name rows of a Locust stats CSV (``Aggregated`` left out)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for raw in csv.DictReader(handle):
            if raw.get("Name") == "Aggregated":
                continue
            rows.append(
                Row(
                    type=raw.get("Type", ""),
                    name=raw["Name"],
                    count=int(_number(raw["Request Count"])),
                    failures=int(_number(raw["Failure Count"])),
                    rps=_number(raw["Requests/s"]),
                    p50=_number(raw["50%"]),
                    p90=_number(raw["90%"]),
                    p99=_number(raw["99%"]),
                    average=_number(raw["Average Response Time"]),
                    maximum=_number(raw["Max Response Time"]),
                )
            )
    return rows


def read_errors(path: Path) -> list[dict[str, Any]]:
    """Failures by (method, name, code), the occurrences of equal codes added up."""
    if not path.exists():
        return []
    counts: dict[tuple[str, str, str], int] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for raw in csv.DictReader(handle):
            key = (raw.get("Method", ""), raw.get("Name", ""), error_code(raw.get("Error", "")))
            counts[key] = counts.get(key, 0) + int(_number(raw.get("Occurrences", "0")))
    return [
        {"type": method, "name": name, "code": code, "count": count}
        for (method, name, code), count in sorted(counts.items(), key=lambda kv: -kv[1])
    ]


def usage_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """What ``GET /v1/usage`` says the run spent (empty when either read is missing).

    Only meaningful within one UTC day (the usage resets at midnight); a fresh tenant
    per run makes ``before`` zero anyway."""
    if not after:
        return {}
    start = Decimal(str((before or {}).get("cost_usd", "0")))
    agents: dict[str, Any] = {}
    for name, row in (after.get("agents") or {}).items():
        was = ((before or {}).get("agents") or {}).get(name, {})
        calls = int(row.get("calls", 0)) - int(was.get("calls", 0))
        cost = Decimal(str(row.get("cost_usd", "0"))) - Decimal(str(was.get("cost_usd", "0")))
        if calls or cost:
            agents[name] = {"calls": calls, "cost_usd": str(cost)}
    return {
        "cost_usd": str(Decimal(str(after.get("cost_usd", "0"))) - start),
        "period_key": after.get("key", ""),
        "agents": agents,
    }


def summarize(
    stats_csv: Path,
    failures_csv: Path,
    scenarios_json: Path | None = None,
    *,
    plan: dict[str, Any] | None = None,
    usage_before: dict[str, Any] | None = None,
    usage_after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's figures, JSON-ready: requests, tasks, errors by code, cost."""
    rows = read_stats(stats_csv)
    requests = [row for row in rows if row.type != TASK]
    tasks = [row for row in rows if row.type == TASK]
    errors = read_errors(failures_csv)
    by_name = {(row.type, row.name): row for row in rows}
    for error in errors:
        row = by_name.get((error["type"], error["name"]))
        error["rate"] = round(error["count"] / row.count, 4) if row and row.count else 0.0
    total = sum(row.count for row in requests)
    failed = sum(row.failures for row in requests)
    scenario_data: dict[str, Any] = {}
    stopped_by = "duration"
    if scenarios_json is not None and scenarios_json.exists():
        raw = json.loads(scenarios_json.read_text(encoding="utf-8"))
        stopped_by = raw.get("stopped_by", stopped_by)
        scenario_data = raw.get("scenarios", {})
    cost = {}
    for name, row in sorted(scenario_data.items()):
        done = int(row.get("tasks", 0))
        spent = float(row.get("cost_usd", 0.0))
        cost[name] = {
            "tasks": done,
            "failed": int(row.get("failed", 0)),
            "cost_usd": round(spent, 6),
            "cost_per_task_usd": round(spent / done, 6) if done else None,
        }
    return {
        "plan": plan or {},
        "stopped_by": stopped_by,
        "totals": {
            "requests": total,
            "failures": failed,
            "requests_per_s": round(sum(row.rps for row in requests), 2),
            "error_rate": round(failed / total, 4) if total else 0.0,
        },
        "requests": [row.as_json() for row in requests],
        "tasks": [row.as_json() for row in tasks],
        "errors": errors,
        "cost": cost,
        "usage": usage_delta(usage_before, usage_after),
    }


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"


def render(summary: dict[str, Any], *, html_name: str | None = "locust.html") -> str:
    """The Markdown report of one run's summary."""
    plan = summary.get("plan", {})
    totals = summary["totals"]
    lines = ["# Load test report", ""]
    if plan:
        lines += [
            f"- Target: `{plan.get('target', '?')}` ({plan.get('host', '?')})",
            f"- Scenarios: {', '.join(plan.get('scenarios', []))}",
            f"- Users: {plan.get('users')} (ramp at {plan.get('spawn_rate')} users/s, then hold)",
            f"- Bounds: {plan.get('duration_s')} s, "
            f"{plan.get('max_requests') or 'no'} request limit; "
            f"stopped by {summary.get('stopped_by', 'duration').replace('_', ' ')}",
        ]
    lines += [
        f"- Requests: {totals['requests']:,} at **{totals['requests_per_s']:,.1f} requests/s**, "
        f"error rate **{_pct(totals['error_rate'])}**",
    ]
    if html_name:
        lines.append(f"- Charts (requests/s, latency, users over time): [{html_name}]({html_name})")
    lines += [
        "",
        "## Requests",
        "",
        "| request | count | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["requests"]:
        lines.append(
            f"| {row['type']} {row['name']} | {row['count']:,} | {row['rps']:,.2f} | "
            f"{row['p50']:,.0f} | {row['p90']:,.0f} | {row['p99']:,.0f} | {row['maximum']:,.0f} | "
            f"{_pct(row['error_rate'])} |"
        )
    if summary["tasks"]:
        lines += [
            "",
            "## Tasks (what a client waits for: a whole conversation, a job to its end)",
            "",
            "| task | count | p50 ms | p90 ms | p99 ms | max ms | failed |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in summary["tasks"]:
            lines.append(
                f"| {row['name']} | {row['count']:,} | {row['p50']:,.0f} | {row['p90']:,.0f} | "
                f"{row['p99']:,.0f} | {row['maximum']:,.0f} | {_pct(row['error_rate'])} |"
            )
    lines += ["", "## Errors by code", ""]
    if summary["errors"]:
        lines += ["| code | where | count | share of its requests |", "|---|---|---:|---:|"]
        for error in summary["errors"]:
            lines.append(
                f"| `{error['code']}` | {error['type']} {error['name']} | {error['count']:,} | "
                f"{_pct(error['rate'])} |"
            )
    else:
        lines.append("None.")
    lines += ["", "## Cost per task", ""]
    if summary["cost"]:
        lines += [
            "| scenario | tasks | failed | cost USD | per task USD |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in summary["cost"].items():
            per = row["cost_per_task_usd"]
            lines.append(
                f"| {name} | {row['tasks']:,} | {row['failed']:,} | {row['cost_usd']:.6f} | "
                f"{'-' if per is None else f'{per:.6f}'} |"
            )
    else:
        lines.append("No task finished.")
    usage = summary.get("usage") or {}
    if usage:
        agents = ", ".join(
            f"{name} {row['calls']} calls ${Decimal(row['cost_usd']):.6f}"
            for name, row in sorted(usage["agents"].items())
        )
        lines += [
            "",
            f"The tenant's spend by `GET /v1/usage` ({usage['period_key']}): "
            f"**${Decimal(usage['cost_usd']):.6f}**" + (f" ({agents})" if agents else "") + ".",
        ]
    return "\n".join(lines) + "\n"


def write(out: Path, summary: dict[str, Any], *, html_name: str | None = "locust.html") -> Path:
    """``report.md`` and ``summary.json`` in ``out``; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    path = out / "report.md"
    path.write_text(render(summary, html_name=html_name), encoding="utf-8")
    return path

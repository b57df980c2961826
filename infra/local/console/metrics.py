"""Per-agent, per-minute series from the local cloud's CloudWatch (moto).

The functions' EMF lines reach moto CloudWatch through the local EMF forwarder
(:mod:`infra.local.emf_forwarder`). Powertools writes every metric of a flush with
one dimension set, so the same event can be stored under several sets (``agent`` +
``service``, ``agent`` + ``release``): for each metric and agent one set is used
(the first, sorted) and its values summed over the set's other dimension values
(releases, models), so nothing is counted twice.

Each chart takes the first name of its candidates that has data: the names of the
observability contract first (``Requests``, ``Errors``, ``LatencyMs``), then the
ones the stack already emitted (``Tasks``, ``TaskErrors``, ``ModelLatency``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

NAMESPACE = "Stratus"
PERIOD_S = 60
#: chart -> candidate metric names, best first.
CHARTS: dict[str, tuple[str, ...]] = {
    "requests": ("Requests", "Tasks"),
    "errors": ("Errors", "TaskErrors"),
    "latency_ms": ("LatencyMs", "ModelLatency"),
    "cost_micro_usd": ("CostMicroUSD", "ModelCostMicroUSD"),
}
#: GetMetricData takes at most 500 queries per call.
MAX_QUERIES = 500


def _list(cloudwatch: Any) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"Namespace": NAMESPACE}
        if token:
            kwargs["NextToken"] = token
        page = cloudwatch.list_metrics(**kwargs)
        metrics.extend(page.get("Metrics", []))
        token = page.get("NextToken")
        if not token:
            return metrics


def _pick(metrics: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(metric, agent) -> the metrics of one dimension set (deduplicated)."""
    by_set: dict[tuple[str, str], dict[tuple[str, ...], dict[tuple[Any, ...], Any]]] = {}
    for metric in metrics:
        dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        agent = dimensions.get("agent")
        if not agent:
            continue
        names = tuple(sorted(dimensions))
        ident = tuple(sorted(dimensions.items()))
        sets = by_set.setdefault((metric["MetricName"], agent), {})
        sets.setdefault(names, {})[ident] = metric
    return {key: list(sets[min(sets)].values()) for key, sets in by_set.items()}


def agent_series(cloudwatch: Any, *, now: datetime, minutes: int = 30) -> dict[str, Any]:
    """``{"minutes": [iso...], "metric_names": {chart: name}, "agents": {agent: {chart:
    [value per minute]}}}``; latency is the mean, cost per task is cost / requests."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    stamps = [start + timedelta(minutes=n) for n in range(minutes)]
    picked = _pick(_list(cloudwatch))
    present = {name for name, _ in picked}
    chosen = {
        chart: next((name for name in names if name in present), names[0])
        for chart, names in CHARTS.items()
    }
    queries: list[dict[str, Any]] = []
    owners: list[tuple[str, str, str]] = []  # (agent, chart, stat)
    for (name, agent), metrics in sorted(picked.items()):
        charts = [chart for chart, wanted in chosen.items() if wanted == name]
        for chart in charts:
            stats = ("Sum", "SampleCount") if chart == "latency_ms" else ("Sum",)
            for metric in metrics:
                for stat in stats:
                    queries.append(
                        {
                            "Id": f"m{len(queries)}",
                            "MetricStat": {
                                "Metric": {
                                    "Namespace": NAMESPACE,
                                    "MetricName": name,
                                    "Dimensions": metric.get("Dimensions", []),
                                },
                                "Period": PERIOD_S,
                                "Stat": stat,
                            },
                            "ReturnData": True,
                        }
                    )
                    owners.append((agent, chart, stat))
    sums: dict[tuple[str, str, str], list[float]] = {}
    for offset in range(0, len(queries), MAX_QUERIES):
        answer = cloudwatch.get_metric_data(
            MetricDataQueries=queries[offset : offset + MAX_QUERIES],
            StartTime=start,
            EndTime=end,
        )
        for result in answer.get("MetricDataResults", []):
            index = int(result["Id"][1:])
            key = owners[index]
            values = sums.setdefault(key, [0.0] * minutes)
            for stamp, value in zip(
                result.get("Timestamps", []), result.get("Values", []), strict=False
            ):
                slot = int((stamp.replace(tzinfo=start.tzinfo) - start).total_seconds() // 60)
                if 0 <= slot < minutes:
                    values[slot] += float(value)
    agents: dict[str, dict[str, list[float]]] = {}
    zero = [0.0] * minutes
    for agent in sorted({a for (_, a) in picked}):
        requests = sums.get((agent, "requests", "Sum"), zero)
        latency_sum = sums.get((agent, "latency_ms", "Sum"), zero)
        latency_n = sums.get((agent, "latency_ms", "SampleCount"), zero)
        cost = sums.get((agent, "cost_micro_usd", "Sum"), zero)
        agents[agent] = {
            "requests": requests,
            "errors": sums.get((agent, "errors", "Sum"), zero),
            "latency_ms": [
                s / n if n else 0.0 for s, n in zip(latency_sum, latency_n, strict=False)
            ],
            "cost_per_task_micro_usd": [
                c / r if r else 0.0 for c, r in zip(cost, requests, strict=False)
            ],
            "cost_micro_usd": cost,
        }
    return {
        "minutes": [stamp.isoformat() for stamp in stamps],
        "metric_names": chosen,
        "agents": _rounded(agents),
    }


def _rounded(agents: Mapping[str, Mapping[str, list[float]]]) -> dict[str, Any]:
    return {
        agent: {chart: [round(v, 3) for v in values] for chart, values in charts.items()}
        for agent, charts in agents.items()
    }

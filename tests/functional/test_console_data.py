"""The local console's answers on moto: per-agent series from CloudWatch (one dimension
set per metric, so nothing is counted twice), budget burn, jobs with steps, logs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from infra.local.console.data import BadRequest, ConsoleData
from infra.local.console.metrics import agent_series
from infra.local.log_buffer import LogBuffer
from stratus.agents import CallScope
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.usage import Usage

NOW = datetime.now(UTC).replace(second=30, microsecond=0)


def _put(cw: Any, name: str, value: float, **dimensions: str) -> None:
    cw.put_metric_data(
        Namespace="Stratus",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "Timestamp": NOW,
                "Value": value,
                "Unit": "Count",
            }
        ],
    )


def _console(cloud: dict[str, Any], logs: LogBuffer | None = None) -> ConsoleData:
    facts = SimpleNamespace(
        tables=cloud["tables"],
        demo_tenant_id="tenant-a",
        queue_urls={},
        functions={},
        region="us-east-1",
        aws_endpoint_url="",
    )
    local = SimpleNamespace(facts=facts, runtime=None, logs=logs or LogBuffer())
    return ConsoleData(local, clock=lambda: NOW, client_factory=lambda name: boto3.client(name))  # type: ignore[call-overload]


def test_series_take_one_dimension_set_per_metric(cloud: dict[str, Any]) -> None:
    cw = boto3.client("cloudwatch")
    # One task, emitted under two dimension sets (as Powertools and the release tags do).
    _put(cw, "Tasks", 1, agent="triage", release="r-1")
    _put(cw, "CostMicroUSD", 300, agent="triage", release="r-1")
    _put(cw, "CostMicroUSD", 300, agent="triage", service="stratus")
    _put(cw, "TaskErrors", 0, agent="triage", release="r-1")
    # Two model calls on two models: the mean latency is over both.
    _put(cw, "ModelLatency", 100, agent="triage", model="gpt-5-mini", service="stratus")
    _put(cw, "ModelLatency", 300, agent="triage", model="gpt-5", service="stratus")
    _put(cw, "Tasks", 2, agent="returns", release="r-2")
    _put(cw, "Tasks", 1, agent="returns", release="r-3")  # a canary: both releases count
    series = agent_series(cw, now=NOW, minutes=10)
    assert len(series["minutes"]) == 10
    assert series["metric_names"]["requests"] == "Tasks"
    triage = series["agents"]["triage"]
    assert triage["requests"][-1] == 1 and sum(triage["requests"]) == 1
    assert triage["cost_micro_usd"][-1] == 300  # not 600
    assert triage["cost_per_task_micro_usd"][-1] == 300
    assert triage["latency_ms"][-1] == 200
    assert sum(triage["errors"]) == 0
    assert series["agents"]["returns"]["requests"][-1] == 3

    _put(cw, "Requests", 5, agent="triage", service="stratus")  # the contract's name wins
    assert agent_series(cw, now=NOW, minutes=10)["metric_names"]["requests"] == "Requests"


def test_budget_burn_jobs_and_logs(cloud: dict[str, Any]) -> None:
    budgets = Runtime(Settings(), clock=NOW.timestamp).budgets
    scope = CallScope("tenant-a", "triage", "request", "r-1")
    reservation = budgets.reserve(scope, "triage", Decimal("0.1"))
    usage = Usage(input_tokens=100, output_tokens=40)
    budgets.settle(
        reservation, Decimal("0.5"), scope=scope, agent="triage", model="gpt-5", usage=usage
    )
    console = _console(cloud)
    scopes = {(s["scope"], s["name"]): s for s in console.budgets()["scopes"]}
    tenant = scopes[("tenant_day", "demo (tenant-a)")]
    assert tenant["spent_usd"] == 0.5 and tenant["limit_usd"] == 50
    assert tenant["burn_pct"] == pytest.approx(1.0)
    assert scopes[("tenant_month", "demo (tenant-a)")]["burn_pct"] == pytest.approx(0.05)
    agent = scopes[("agent_day", "triage")]  # no agent limit in this stage: usage, no pct
    assert agent["spent_usd"] == 0.5 and agent["burn_pct"] is None
    agents = {a["agent"]: a for a in console.agents()["agents"]}
    assert agents["triage"]["cost_today_usd"] == 0.5 and agents["triage"]["calls_today"] == 1

    jobs = boto3.client("dynamodb")
    table = cloud["tables"]["jobs"]
    for item in (
        {
            "job_id": "job_1",
            "sk": "JOB",
            "agent": "researcher",
            "status": "succeeded",
            "cost_usd": "0.25",
            "created_at": "2026-01-01T00:00:00+00:00",
            "correlation_id": "cid-7",
            "metadata": '{"routed_from": "triage"}',
        },
        {
            "job_id": "job_1",
            "sk": "STEP#plan",
            "status": "succeeded",
            "cost_usd": "0.2",
            "updated_at": "2026-01-01T00:00:01+00:00",
            "model": "gpt-5",
            "input_tokens": "9",
        },
        {
            "job_id": "job_1",
            "sk": "STEP#review",
            "status": "succeeded",
            "cost_usd": "0.05",
            "updated_at": "2026-01-01T00:00:02+00:00",
        },
        {"job_id": "QUEUED#tenant-a", "sk": "QUEUED", "queued": "0"},
    ):
        jobs.put_item(
            TableName=table,
            Item={
                k: ({"N": v} if k in ("cost_usd", "input_tokens", "queued") else {"S": v})
                for k, v in item.items()
            },
        )
    listed = console.jobs()
    assert listed["total"] == 1 and listed["by_status"] == {"succeeded": 1}
    job = listed["jobs"][0]
    assert (job["correlation_id"], job["routed_from"], job["cost_usd"]) == ("cid-7", "triage", 0.25)
    assert [s["name"] for s in job["steps"]] == ["plan", "review"]
    assert job["steps"][0]["tokens"] == 9

    with pytest.raises(BadRequest) as bad:
        console.logs(correlation_id="not valid!")
    assert bad.value.code == "invalid_correlation_id"
    with pytest.raises(BadRequest):
        console.logs(limit=0)

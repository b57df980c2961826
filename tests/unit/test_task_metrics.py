"""The operator metrics of every execution model (``stratus.task_metrics``), read from the
EMF the paths print (as CloudWatch Logs reads it): a synchronous invoke, a session turn,
a job and a workflow step each emit ``CostMicroUSD`` on the cost alarm's series
(dimensions exactly ``agent`` + ``service``), errors by code, breaker opens and budget
burn. On the in-memory fakes: no AWS, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from functions.agents import load_agent
from stratus import task_metrics
from stratus.agents import CallScope, ToolContext
from stratus.budget_alerts import ThresholdAlerts
from stratus.budget_scopes import BudgetScope
from stratus.config import Settings
from stratus.errors import BudgetExceeded, ModelUnavailable
from stratus.usage import Usage
from tests.support import json_lines

#: The dimension set the hourly cost alarm (infra/constructs/alerts.py) reads.
ALARM_DIMENSIONS = ["agent", "service"]
USAGE = Usage(input_tokens=100, cached_input_tokens=40, output_tokens=20, reasoning_tokens=5)


def documents(text: str) -> list[dict[str, Any]]:
    """Every EMF document printed, with ``dims`` (its one dimension set, sorted)."""
    docs = [doc for doc in json_lines(text) if "_aws" in doc]
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Stratus"
        (dims,) = directive["Dimensions"]
        doc["dims"] = sorted(dims)
        doc["names"] = {m["Name"] for m in directive["Metrics"]}
    return docs


def on(docs: list[dict[str, Any]], *dims: str, **values: str) -> list[dict[str, Any]]:
    """The documents with exactly these dimensions (and these dimension values)."""
    return [
        d
        for d in docs
        if d["dims"] == sorted(dims) and all(d.get(k) == v for k, v in values.items())
    ]


def cost_on_alarm_series(docs: list[dict[str, Any]], agent: str) -> list[float]:
    return [
        d["CostMicroUSD"][0]
        for d in on(docs, *ALARM_DIMENSIONS, agent=agent, service="stratus")
        if "CostMicroUSD" in d["names"]
    ]


@dataclass
class Result:
    output: Any = "ok"
    model: str = "gpt-5-mini"
    usage: Usage = USAGE
    cost_usd: Decimal = Decimal("0.0042")
    model_calls: int = 2
    ledger_hits: int = 0
    cache_hits: int = 1
    fallback_from: list[str] = field(default_factory=lambda: ["gpt-5"])
    tool_calls: list[Any] = field(default_factory=list)
    fake_model: bool = False
    downgraded: bool = False

    @property
    def tool_names(self) -> list[str]:
        return []


def test_a_task_emits_every_metric_on_the_agent_series_and_by_kind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task_metrics.task_ended("triage", "sync", result=Result(), latency_ms=12.5)
    docs = documents(capsys.readouterr().out)
    (agent,) = on(docs, *ALARM_DIMENSIONS)
    assert (agent["agent"], agent["service"]) == ("triage", "stratus")
    assert {k: agent[k] for k in agent["names"]} == {
        "Requests": [1.0],
        "Successes": [1.0],
        "Errors": [0.0],
        "LatencyMs": [12.5],
        "CostMicroUSD": [4200.0],
        "InputTokens": [100.0],
        "OutputTokens": [20.0],
        "CachedTokens": [40.0],
        "ReasoningTokens": [5.0],
        "LedgerHits": [0.0],
        "CacheHits": [1.0],
        "Fallbacks": [1.0],
    }
    (kind,) = on(docs, "agent", "kind", "service")
    assert kind["kind"] == "sync" and kind["CostMicroUSD"] == [4200.0]
    assert kind["names"] == {"Requests", "Successes", "Errors", "LatencyMs", "CostMicroUSD"}
    assert not on(docs, "agent", "ErrorCode", "service")  # no failure, no code
    assert all("tenant" not in d["dims"] and "tenant_id" not in d for d in docs)


def test_a_failure_counts_by_code_and_only_agent_failures_are_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task_metrics.task_ended("triage", "sync", error=ModelUnavailable("down"), latency_ms=3)
    task_metrics.task_ended("triage", "session", error=BudgetExceeded("spent"), latency_ms=1)
    task_metrics.task_ended("triage", "sync", error=RuntimeError("boom"), latency_ms=1)
    docs = documents(capsys.readouterr().out)
    agent = on(docs, *ALARM_DIMENSIONS)
    assert [d["Errors"] for d in agent] == [[1.0], [0.0], [1.0]]  # a 4xx refusal: not an error
    assert [d["Successes"] for d in agent] == [[0.0]] * 3
    assert all("CostMicroUSD" not in d["names"] for d in agent)  # no cost known
    codes = [d["ErrorCode"] for d in on(docs, "agent", "ErrorCode", "service")]
    assert codes == ["model_unavailable", "budget_exceeded", "internal_error"]


def test_a_task_replayed_from_the_ledger_bills_nothing_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task_metrics.task_ended("triage", "sync", result=Result(ledger_hits=2), latency_ms=1)
    task_metrics.task_ended("triage", "sync", result=Result(ledger_hits=1), latency_ms=1)
    docs = documents(capsys.readouterr().out)
    assert cost_on_alarm_series(docs, "triage") == [0.0, 4200.0]


def test_the_invoke_path_emits_its_cost_once_on_the_alarm_series(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stratus.contracts import InvokeRequest
    from stratus.invoke import InvokeService

    class Runner:
        def run(self, user_input: Any, *, ctx: ToolContext, **_: Any) -> Result:
            return Result(output={"category": "other", "summary": "x"})

    spec = load_agent("triage")
    service = InvokeService(spec, Settings(), runner=Runner())  # type: ignore[arg-type]
    service.release = "r-0123456789ab"
    capsys.readouterr()
    service.invoke(InvokeRequest(input="where is A-1001?"), tenant_id="t1", request_id="r1")
    docs = documents(capsys.readouterr().out)
    assert cost_on_alarm_series(docs, "triage") == [4200.0]
    (kind,) = on(docs, "agent", "kind", "service")
    assert kind["kind"] == "sync" and kind["LatencyMs"][0] >= 0


def test_a_session_turn_emits_its_cost_on_the_alarm_series(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stratus.sessions import MemorySessionStore, SessionService

    class Runner:
        def run(self, user_input: Any, *, ctx: ToolContext, **_: Any) -> Result:
            return Result(output=f"reply to: {user_input}")

    spec = load_agent("support")
    assert spec.sessions is not None
    runner = Runner()
    service = SessionService(
        spec,
        Settings(),
        MemorySessionStore(),
        runner,
        runner,
        clock=lambda: 1_800_000_000.0,
    )
    service.release = "r-0123456789ab"
    created = service.create("t1", {})
    capsys.readouterr()
    reply = service.post_message("t1", created["session_id"], "hello", request_id="req-1")
    docs = documents(capsys.readouterr().out)
    assert cost_on_alarm_series(docs, "support") == [pytest.approx(reply["cost_usd"] * 10**6)]
    (kind,) = on(docs, "agent", "kind", "service")
    assert kind["kind"] == "session" and kind["Successes"] == [1.0]
    (agent,) = on(docs, *ALARM_DIMENSIONS)
    assert agent["InputTokens"] == [100.0] and agent["LatencyMs"][0] >= 0


def _jobs() -> tuple[Any, Any]:
    from stratus.jobs import JobService, Notifier
    from stratus.jobs.memory import MemoryEvents, MemoryJobStore, MemoryQueue, MemoryWorkflows

    store = MemoryJobStore(clock=lambda: 1_800_000_000.0)
    settings = Settings(
        job_queues={"triage": "https://sqs.test/triage", "researcher": "https://sqs.test/r"},
        workflows={"researcher": "arn:aws:states:eu-west-1:123456789012:stateMachine:r"},
        job_max_receive_count=3,
    )
    service = JobService(
        store,
        MemoryQueue(),
        Notifier(publisher=MemoryEvents()),
        settings=settings,
        workflows=MemoryWorkflows(),
        rng=lambda: 0.5,
    )
    return service, store


class StepRunner:
    def __init__(self, output: Any) -> None:
        self.output = output

    def run(self, user_input: Any, *, ctx: Any, deadline: Any = None) -> Result:
        return Result(output=self.output, cost_usd=Decimal("0.01"), model_calls=1, cache_hits=0)


def test_a_finished_job_emits_its_cost_on_the_alarm_series(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stratus.jobs import JobMessage, JobRequest

    service, _ = _jobs()
    job, _ = service.submit(
        JobRequest(agent="triage", input="where is A-1001?"),
        tenant_id="t1",
        idempotency_key=None,
        source="api",
    )
    claimed = service.claim(
        JobMessage(job_id=job["job_id"], tenant_id="t1", agent="triage"), agent="triage", lease_s=60
    )
    capsys.readouterr()
    service.run(claimed, StepRunner({"category": "other"}), routes={}, request_id="r", receives=1)
    docs = documents(capsys.readouterr().out)
    assert cost_on_alarm_series(docs, "triage") == [10000.0]
    (kind,) = on(docs, "agent", "kind", "service")
    assert kind["kind"] == "job" and kind["Successes"] == [1.0]
    (agent,) = on(docs, *ALARM_DIMENSIONS)
    assert agent["InputTokens"] == [100.0] and agent["LatencyMs"] == [0.0]  # the fake clock


def test_job_ended_reads_latency_and_error_code_from_the_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = {
        "agent": "triage",
        "created_at": "2027-01-01T00:00:00.000+00:00",
        "updated_at": "2027-01-01T00:00:02.500+00:00",
        "cost_usd": Decimal("0.002"),
        "error": {"code": "model_unavailable", "message": "down"},
    }
    task_metrics.job_ended(record, "failed")
    task_metrics.job_ended({**record, "error": None}, "cancelled")
    docs = documents(capsys.readouterr().out)
    failed, cancelled = on(docs, *ALARM_DIMENSIONS)
    assert failed["LatencyMs"] == [2500.0] and failed["Errors"] == [1.0]
    assert cancelled["Errors"] == [0.0] and cancelled["Successes"] == [0.0]
    codes = [d["ErrorCode"] for d in on(docs, "agent", "ErrorCode", "service")]
    assert codes == ["model_unavailable", "job_cancelled"]


def test_workflow_steps_bill_their_cost_and_the_job_does_not_bill_it_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stratus.jobs import JobMessage, JobRequest
    from stratus.jobs.workflow import WorkflowTasks

    service, _ = _jobs()
    from functions.agents.researcher import WORKFLOW

    job, _ = service.submit(
        JobRequest(agent="researcher", input="compare A and B"),
        tenant_id="t1",
        idempotency_key=None,
        source="api",
    )
    claimed = service.claim(
        JobMessage(job_id=job["job_id"], tenant_id="t1", agent="researcher"),
        agent="researcher",
        lease_s=60,
    )
    service.start_workflow(claimed)
    runners = {
        "plan": StepRunner({"steps": ["a"]}),
        "research": StepRunner({"finding": "x"}),
        "review": StepRunner({"answer": "y"}),
    }
    tasks = WorkflowTasks(service, WORKFLOW, runners)
    capsys.readouterr()
    tasks.handle({"action": "plan", "job_id": job["job_id"]})
    tasks.handle({"action": "research", "job_id": job["job_id"], "index": 0, "task": "a"})
    tasks.handle({"action": "review", "job_id": job["job_id"]})
    tasks.handle({"action": "complete", "job_id": job["job_id"]})
    docs = documents(capsys.readouterr().out)
    # Each step on the cost alarm's series; the finished job adds no cost of its own.
    assert cost_on_alarm_series(docs, "researcher") == [10000.0] * 3
    steps = on(docs, "agent", "kind", "service", kind="workflow_step")
    assert len(steps) == 3 and all(d["CostMicroUSD"] == [10000.0] for d in steps)
    (finished,) = on(docs, "agent", "kind", "service", kind="job")
    assert "CostMicroUSD" not in finished["names"] and finished["Successes"] == [1.0]
    # Steps are not requests of the agent series: the job is (once).
    requests = [d for d in on(docs, *ALARM_DIMENSIONS) if "Requests" in d["names"]]
    assert len(requests) == 1


def test_waiting_for_approval_is_counted(capsys: pytest.CaptureFixture[str]) -> None:
    task_metrics.approval_awaited("researcher")
    (doc,) = documents(capsys.readouterr().out)
    assert doc["dims"] == ["agent", "service"] and doc["WorkflowsWaitingApproval"] == [1.0]


def test_a_breaker_opening_is_counted_for_the_stage_and_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stratus.breaker import CircuitBreaker
    from stratus.gateway_stores.memory import MemoryBreakerStore

    settings = Settings(breaker_failures=2)
    breaker = CircuitBreaker(settings, MemoryBreakerStore())
    for _ in range(2):
        admission = breaker.before("https://api.test", "gpt-5-mini")
        breaker.failure("https://api.test", "gpt-5-mini", admission)
    docs = documents(capsys.readouterr().out)
    (stage,) = on(docs, "service")
    (model,) = on(docs, "model", "service")
    assert stage["BreakerOpens"] == [1.0] and model["model"] == "gpt-5-mini"


def test_budget_burn_is_a_percentage_per_scope(capsys: pytest.CaptureFixture[str]) -> None:
    class Publisher:
        def publish(self, subject: str, message: Any) -> None:
            raise AssertionError("no threshold is crossed here")

    alerts = ThresholdAlerts(Settings(), None, Publisher())
    scope = CallScope(tenant_id="t1", agent="triage", kind="request", scope_id="r1")

    def budget(name: str) -> BudgetScope:
        return BudgetScope(name, f"{name}#k", Decimal("2"), None, 0)

    alerts.settled(budget("global_day"), Decimal("0.5"), Decimal("0.1"), scope, "triage")
    alerts.settled(budget("agent_day"), Decimal("1.5"), Decimal("0.1"), scope, "triage")
    alerts.settled(budget("tenant_day"), Decimal("1"), Decimal("0.1"), scope, "triage")
    docs = [d for d in documents(capsys.readouterr().out) if "BudgetBurnPct" in d["names"]]
    assert [(d["dims"], d["scope"], d["BudgetBurnPct"]) for d in docs] == [
        (["scope", "service"], "global_day", [25.0]),
        (["agent", "scope", "service"], "agent_day", [75.0]),
    ]

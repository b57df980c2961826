"""What the eval targets observe: tool calls with arguments, job results, routing, steps."""

from __future__ import annotations

from typing import Any

import pytest

from stratus.evals import models as m
from stratus.evals.checks import Observation, ToolCall, check
from stratus.evals.target import (
    JOB_TOOLS_UNOBSERVABLE,
    JobDidNotSucceed,
    job_observation,
    tool_calls_of,
)
from stratus.runner import RAW_ARGUMENTS, ToolCallRecord


def _job(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_id": "job_1",
        "status": "succeeded",
        "result": {"category": "order_status"},
        "usage": {"input_tokens": 100, "output_tokens": 20},
        "cost_usd": 0.0002,
        "routed_to": {"agent": "order_status", "job_id": "job_2"},
        "steps": [{"name": "main", "model": "gpt-5-mini"}],
    }
    return base | overrides


def _assert(kind: str, **fields: Any) -> Any:
    case = m.Case.model_validate(
        {"id": "c", "kind": "job", "input": "x", "assertions": [{"type": kind, **fields}]}
    )
    return case.assertions[0]


def test_a_tool_call_record_keeps_the_parsed_arguments_or_the_raw_text() -> None:
    assert ToolCallRecord.of("lookup_order", '{"order_id": "A-1"}').to_json() == {
        "name": "lookup_order",
        "arguments": {"order_id": "A-1"},
    }
    assert ToolCallRecord.of("t", None).arguments == {}
    assert ToolCallRecord.of("t", '{"broken": ').arguments == {RAW_ARGUMENTS: '{"broken": '}
    assert ToolCallRecord.of("t", "[1, 2]").arguments == {RAW_ARGUMENTS: "[1, 2]"}


def test_tool_calls_of_an_answer_become_tool_calls_and_skip_what_is_not_one() -> None:
    raw = [
        {"name": "lookup_order", "arguments": {"order_id": "A-1"}},
        {"name": "no_args"},
        {"arguments": {"x": 1}},
        "junk",
    ]
    assert tool_calls_of(raw) == [
        ToolCall("lookup_order", {"order_id": "A-1"}),
        ToolCall("no_args", {}),
    ]
    assert tool_calls_of(None) == []


def test_a_finished_job_is_observed_with_routing_steps_cost_and_tokens() -> None:
    seen = job_observation(_job(), latency_s=0.5, fake_model=True)
    assert seen.output == {"category": "order_status"}
    assert (seen.routed_to, seen.steps, seen.model) == ("order_status", ["main"], "gpt-5-mini")
    assert (seen.cost_usd, seen.tokens, seen.latency_s) == (0.0002, 120, 0.5)
    assert seen.tool_calls_unobservable == JOB_TOOLS_UNOBSERVABLE
    unrouted = job_observation(_job(routed_to=None), latency_s=0, fake_model=False)
    assert unrouted.routed_to is None


def test_a_job_that_did_not_succeed_is_an_error_with_its_code() -> None:
    failed = _job(status="failed", error={"code": "job_budget_exceeded", "message": "over cap"})
    with pytest.raises(JobDidNotSucceed) as error:
        job_observation(failed, latency_s=0, fake_model=False)
    assert error.value.code == "job_budget_exceeded"
    assert "job job_1 ended failed: over cap" in str(error.value)


@pytest.mark.parametrize(
    ("agent", "routed", "status", "message"),
    [
        ("returns", "returns", "passed", "routed to returns, expected returns"),
        ("returns", None, "failed", "routed to no agent, expected returns"),
        (None, None, "passed", "routed to no agent, expected no agent"),
        (None, "order_status", "failed", "routed to order_status, expected no agent"),
    ],
)
def test_routed_to_compares_the_agent_the_job_went_to(
    agent: str | None, routed: str | None, status: str, message: str
) -> None:
    seen = Observation(output={}, routed_to=routed, steps=["main"])
    result = check(_assert("routed_to", agent=agent), seen, None)
    assert (result.status, result.message) == (status, message)


def test_job_assertions_fail_on_an_observation_that_is_not_a_job() -> None:
    seen = Observation(output={})
    routed = check(_assert("routed_to", agent=None), seen, None)
    assert (routed.status, routed.message) == ("failed", "routed_to is only observable on a job")
    steps = check(_assert("job_steps", include=["main"]), seen, None)
    assert (steps.status, steps.message) == ("failed", "job_steps is only observable on a job")


def test_job_steps_names_the_missing_steps() -> None:
    seen = Observation(output={}, steps=["plan", "research-0", "review"])
    ok = check(_assert("job_steps", include=["plan", "review"]), seen, None)
    assert ok.status == "passed"
    missing = check(_assert("job_steps", include=["plan", "research-1"]), seen, None)
    assert missing.status == "failed"
    assert missing.message == (
        'the job\'s steps are ["plan", "research-0", "review"]; missing ["research-1"]'
    )


def test_tool_assertions_on_a_job_fail_as_not_observable() -> None:
    seen = job_observation(_job(), latency_s=0, fake_model=False)
    result = check(_assert("tool_called", name="lookup_order"), seen, None)
    assert (result.status, result.message) == (
        "failed",
        f"lookup_order: {JOB_TOOLS_UNOBSERVABLE}",
    )

"""The synthetic scenario (no AWS): live aliases as the synthetic tenant, counts, the raise."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pytest

from functions.handlers.release_hooks import suites_for
from stratus.evals.models import Suite
from stratus.synthetic import (
    SMOKE_CASES_PER_AGENT,
    Outcome,
    SyntheticConfig,
    SyntheticFailed,
    live_target,
    run_scenario,
    smoke_plan,
)


def _suite(agent: str) -> Suite:
    return Suite.model_validate(
        {
            "agent": agent,
            "cases": [
                {
                    "id": "says-ok",
                    "tags": ["critical"],
                    "input": "ping",
                    "assertions": [{"type": "text_contains", "text": "ok"}],
                }
            ],
        }
    )


class FakeLambda:
    """``invoke`` of the agents' functions: ``good`` answers, ``bad`` fails with a 500."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if kwargs["FunctionName"] == "fn-bad":
            body = {"error": {"code": "internal_error", "message": "boom", "request_id": "r"}}
            payload = {"statusCode": 500, "body": json.dumps(body)}
        else:
            payload = {"statusCode": 200, "body": json.dumps({"output": "ok", "model": "m"})}
        return {"Payload": io.BytesIO(json.dumps(payload).encode())}


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, list[Outcome]]] = []

    def publish(self, scenario: str, outcomes: Sequence[Outcome]) -> None:
        self.published.append((scenario, list(outcomes)))


def _run(functions: dict[str, str], client: FakeLambda, sink: Recorder) -> list[Outcome]:
    config = SyntheticConfig(functions=functions, tenant_id="synthetic-tenant")
    target = live_target(client, config, lambda agent: None)
    return run_scenario(target, sorted(functions), suites_for=lambda a: [_suite(a)], sink=sink)


def test_a_healthy_run_publishes_zero_failures_and_calls_live_as_the_tenant() -> None:
    client, sink = FakeLambda(), Recorder()
    assert _run({"good": "fn-good"}, client, sink) == [Outcome("good", 1, 0)]
    assert sink.published == [("smoke", [Outcome("good", 1, 0)])]
    (call,) = client.calls
    assert (call["FunctionName"], call["Qualifier"]) == ("fn-good", "live")
    event = json.loads(call["Payload"])
    assert event["requestContext"]["authorizer"]["tenant_id"] == "synthetic-tenant"
    assert event["path"] == "/v1/agents/good/invoke"


def test_a_failing_agent_is_counted_then_raised() -> None:
    sink = Recorder()
    with pytest.raises(SyntheticFailed, match="bad: says-ok"):
        _run({"good": "fn-good", "bad": "fn-bad"}, FakeLambda(), sink)
    ((scenario, outcomes),) = sink.published  # published before the raise
    assert scenario == "smoke"
    assert outcomes == [Outcome("bad", 0, 1, ("says-ok",)), Outcome("good", 1, 0)]


def test_an_agent_without_critical_cases_is_a_failure() -> None:
    sink = Recorder()
    config = SyntheticConfig(functions={"quiet": "fn-quiet"})
    target = live_target(FakeLambda(), config, lambda agent: None)
    with pytest.raises(SyntheticFailed, match="no_critical_case"):
        run_scenario(target, ["quiet"], suites_for=lambda a: [], sink=sink)
    assert sink.published[0][1] == [Outcome("quiet", 0, 1, ("no_critical_case",))]


def test_smoke_takes_a_few_critical_cases_of_the_real_suites() -> None:
    planned = smoke_plan(suites_for("order_status"))
    assert 0 < len(planned) <= SMOKE_CASES_PER_AGENT
    assert all(p.k == 1 and "critical" in p.case.tags for p in planned)


def test_the_config_comes_from_the_environment() -> None:
    raw = {"STRATUS_SYNTHETIC": json.dumps({"scenario": "smoke", "functions": {"a": "fn"}})}
    assert SyntheticConfig.from_env(raw).functions == {"a": "fn"}
    with pytest.raises(ValueError, match="STRATUS_SYNTHETIC"):
        SyntheticConfig.from_env({})

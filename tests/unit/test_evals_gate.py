"""Assertions, pass@k, the gate's verdict and the reports, on in-memory observations."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from pydantic import TypeAdapter

from stratus.evals import gate, reports
from stratus.evals.checks import Observation, ToolCall, check
from stratus.evals.models import Assertion, Case, Suite
from stratus.evals.runner import CaseResult, SampleResult, plan, run_cases

ASSERTION: TypeAdapter[Any] = TypeAdapter(Assertion)


def _check(data: dict[str, Any], seen: Observation, schema: dict[str, Any] | None = None) -> Any:
    return check(ASSERTION.validate_python(data), seen, schema)


SEEN = Observation(
    output={"category": "billing", "confidence": 0.9, "items": [{"name": "shoe"}]},
    cost_usd=0.002,
    latency_s=1.5,
    input_tokens=100,
    output_tokens=50,
    tool_calls=[ToolCall("lookup_order", {"order_id": "A-1", "verbose": True})],
)


@pytest.mark.parametrize(
    ("assertion", "status"),
    [
        ({"type": "field_equals", "path": "category", "value": "billing"}, "passed"),
        ({"type": "field_equals", "path": "category", "value": "other"}, "failed"),
        ({"type": "field_equals", "path": "missing", "value": 1}, "failed"),
        ({"type": "field_equals", "path": "items.0.name", "value": "shoe"}, "passed"),
        ({"type": "field_one_of", "path": "category", "values": ["billing", "x"]}, "passed"),
        ({"type": "field_matches", "path": "category", "pattern": "^bill"}, "passed"),
        ({"type": "text_contains", "text": "BILLING"}, "passed"),
        ({"type": "text_contains", "text": "BILLING", "case_sensitive": True}, "failed"),
        ({"type": "text_not_contains", "text": "refund"}, "passed"),
        ({"type": "text_matches", "pattern": 'confidence": 0\\.9'}, "passed"),
        ({"type": "tool_called", "name": "lookup_order"}, "passed"),
        (
            {"type": "tool_called", "name": "lookup_order", "arguments": {"order_id": "A-1"}},
            "passed",
        ),
        ({"type": "tool_called", "name": "lookup_order", "arguments": {"order_id": "B"}}, "failed"),
        ({"type": "tool_called", "name": "refund"}, "failed"),
        ({"type": "tool_not_called", "name": "refund"}, "passed"),
        ({"type": "tool_not_called", "name": "lookup_order"}, "failed"),
        ({"type": "cost_at_most", "usd": 0.002}, "passed"),
        ({"type": "cost_at_most", "usd": 0.001}, "failed"),
        ({"type": "latency_at_most", "seconds": 1}, "failed"),
        ({"type": "tokens_at_most", "tokens": 150}, "passed"),
        ({"type": "tokens_at_most", "tokens": 149}, "failed"),
        ({"type": "llm_judge", "rubric": "Is it polite?"}, "skipped"),
    ],
)
def test_each_assertion(assertion: dict[str, Any], status: str) -> None:
    assert _check(assertion, SEEN).status == status


@pytest.mark.parametrize("kind", ["tool_called", "tool_not_called"])
def test_tool_assertions_fail_when_the_target_cannot_see_tool_calls(kind: str) -> None:
    from dataclasses import replace

    blind = replace(SEEN, tool_calls=[], tool_calls_unobservable="not observable over the API")
    result = _check({"type": kind, "name": "lookup_order"}, blind)
    assert (result.status, result.message) == (
        "failed",
        "lookup_order: not observable over the API",
    )


def test_output_schema_uses_the_given_schema_or_the_agents() -> None:
    schema = {"type": "object", "properties": {"confidence": {"maximum": 0.5}}}
    failed = _check({"type": "output_schema", "schema": schema}, SEEN)
    assert failed.status == "failed" and failed.message.startswith("confidence: 0.9 is greater")
    agent_schema = {"type": "object", "required": ["category"]}
    assert _check({"type": "output_schema"}, SEEN, agent_schema).status == "passed"
    assert _check({"type": "output_schema"}, SEEN, None).status == "failed"


def _case(case_id: str, outcomes: list[bool], **fields: Any) -> CaseResult:
    case = Case.model_validate(
        {"id": case_id, "input": "x", "assertions": [{"type": "tool_not_called", "name": "t"}]}
        | fields
    )
    samples = [
        SampleResult(ok, observation=Observation(output="a", cost_usd=0.01)) for ok in outcomes
    ]
    return CaseResult("triage", case, samples)


@pytest.mark.parametrize(
    ("require", "outcomes", "passed"),
    [
        ("all", [True, True, False], False),
        ("all", [True, True], True),
        ("majority", [True, False, True, False, True], True),
        ("majority", [True, False, True, False], False),
        ("any", [False, False, True], True),
        ("any", [False, False], False),
    ],
)
def test_pass_at_k(require: str, outcomes: list[bool], passed: bool) -> None:
    result = _case("c", outcomes, require=require)
    assert result.passed is passed
    assert result.pass_rate == sum(outcomes) / len(outcomes)


SUITE = Suite.model_validate(
    {
        "agent": "triage",
        "threshold": 50,
        "cases": [{"id": "a", "input": "x", "assertions": [{"type": "cost_at_most", "usd": 1}]}],
    }
)
BASELINE = gate.Baseline(
    agent="triage",
    score=100,
    cases={"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0},
    model="m",
    release="1.0.0",
)


def _judge(cases: list[CaseResult], baseline: gate.Baseline | None = BASELINE) -> gate.AgentVerdict:
    return gate.judge("triage", [SUITE], cases, model="m", release="1.0.0", baseline=baseline)


def test_the_score_is_the_mean_pass_rate_and_matching_the_baseline_passes() -> None:
    verdict = _judge([_case(i, [True]) for i in "abcd"])
    assert (verdict.score, verdict.baseline_score, verdict.passed) == (100.0, 100.0, True)


def test_a_regression_beyond_max_regression_fails_and_names_cases_and_drop() -> None:
    verdict = _judge(
        [_case("a", [True]), _case("b", [False]), _case("c", [True]), _case("d", [True])]
    )
    assert verdict.score == 75.0 and not verdict.passed
    assert verdict.regressed == ["b"]
    assert verdict.reasons == [
        "score dropped 25.00 points against the baseline (100.00 -> 75.00; at most 2.00); "
        "regressed: b"
    ]


def test_a_drop_within_max_regression_passes() -> None:
    baseline = BASELINE.model_copy(update={"cases": {str(i): 1.0 for i in range(100)}})
    cases = [_case(str(i), [True]) for i in range(98)] + [_case("98", [True, False])]
    cases.append(_case("99", [True, True, False, False]))
    verdict = _judge(cases, baseline)
    assert verdict.baseline_score == 100.0 and verdict.score == 99.0
    assert verdict.passed and verdict.regressed == ["98", "99"]


def test_threshold_and_critical_cases_fail_the_gate_without_a_baseline() -> None:
    verdict = _judge([_case("a", [False]), _case("b", [True, False], tags=["critical"])], None)
    assert verdict.score == 25.0
    assert verdict.reasons == [
        "score 25.00 is below the threshold 50.00",
        "critical case b failed (1/2 passed)",
    ]


def test_a_baseline_of_another_model_is_noted() -> None:
    verdict = gate.judge(
        "triage", [SUITE], [_case("a", [True])], model="real", release="2.0.0", baseline=BASELINE
    )
    assert verdict.notes == [
        "the baseline was taken on model m, not real",
        "the baseline was taken on release 1.0.0",
    ]


def test_reports_name_the_failures() -> None:
    failing = _case("b", [True, False, False], require="majority")
    failing.samples[1] = SampleResult(False, error="ModelOutputInvalid: bad answer")
    verdict = _judge([_case("a", [True]), failing])
    junit = ET.fromstring(reports.to_junit([verdict], elapsed_s=1.0).split("\n", 1)[1])
    suite = junit.find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "2"
    failure = junit.find(".//testcase[@name='b']/failure")
    assert failure is not None and failure.get("message") == "1/3 samples passed (require majority)"
    assert "ModelOutputInvalid: bad answer" in (failure.text or "")
    markdown = reports.to_markdown([verdict], elapsed_s=1.0, offline=True)
    assert "| b | FAIL | 1/3 | ModelOutputInvalid: bad answer |" in markdown
    assert "cannot judge quality" in markdown
    data = reports.to_json([verdict], elapsed_s=1.0, offline=True)
    assert data["passed"] is False and data["agents"][0]["regressed"] == ["b"]


class _Echo:
    """A target that answers with the input and records how many runs overlap."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def run(self, agent: str, user_input: Any) -> Observation:
        import time

        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.01)
        with self.lock:
            self.running -= 1
        if user_input == "boom":
            raise RuntimeError("exploded")
        return Observation(output={"echo": user_input})

    def output_schema(self, agent: str) -> dict[str, Any] | None:
        return None


def test_the_runner_bounds_concurrency_keeps_order_and_turns_errors_into_failures() -> None:
    suite = Suite.model_validate(
        {
            "agent": "triage",
            "cases": [
                {
                    "id": f"c{i}",
                    "input": "boom" if i == 3 else f"m{i}",
                    "samples": 2,
                    "tags": ["odd"] if i % 2 else [],
                    "assertions": [{"type": "field_equals", "path": "echo", "value": f"m{i}"}],
                }
                for i in range(8)
            ],
        }
    )
    target = _Echo()
    seen: list[int] = []
    results = run_cases(
        plan([suite]), target, concurrency=3, progress=lambda d, t, _: seen.append(d)
    )
    assert [r.case.id for r in results] == [f"c{i}" for i in range(8)]
    assert target.peak <= 3 and seen == list(range(1, 17))
    assert [r.passed for r in results] == [True, True, True, False, True, True, True, True]
    assert results[3].samples[0].error == "RuntimeError: exploded"
    assert [p.case.id for p in plan([suite], tag="odd", samples=5)] == ["c1", "c3", "c5", "c7"]
    assert {p.k for p in plan([suite], samples=5)} == {5}

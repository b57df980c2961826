"""The release gate's one decision function (CodeDeploy hooks and ``stratus canary``)."""

from __future__ import annotations

import pytest

from stratus.release_gate import GatePolicy, VersionStats, decide, p90

STABLE = VersionStats(
    requests=200, errors=2, p90_latency_ms=800, cost_usd=0.2, tasks=200, eval_score=95
)


def _candidate(**changes: float) -> VersionStats:
    base = {
        "requests": 40,
        "errors": 0,
        "p90_latency_ms": 820.0,
        "cost_usd": 0.04,
        "tasks": 40,
        "eval_score": 95.0,
    }
    base.update(changes)
    return VersionStats(**base)  # type: ignore[arg-type]


def test_a_candidate_like_the_stable_version_is_promoted_with_every_check_named() -> None:
    decision = decide(_candidate(), STABLE)
    assert decision.promote and decision.action == "promote"
    assert [c.name for c in decision.checks] == [
        "error_rate",
        "p90_latency",
        "cost_per_task",
        "eval_score",
    ]
    assert decision.reasons == []


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({"errors": 4}, "error_rate"),  # 10% > 5%
        ({"p90_latency_ms": 1300.0}, "p90_latency"),  # > 1.5 x 800
        ({"cost_usd": 0.2}, "cost_per_task"),  # 5x the stable cost per task
        ({"eval_score": 90.0}, "eval_score"),  # more than 2 points below 95
    ],
)
def test_each_regression_alone_rolls_back_and_is_named(
    changes: dict[str, float], failed: str
) -> None:
    decision = decide(_candidate(**changes), STABLE)
    assert not decision.promote
    assert [c.name for c in decision.checks if c.status == "failed"] == [failed]
    assert decision.reasons[0].startswith(f"{failed}: ")
    assert decision.summary().startswith("rollback: ")


def test_the_error_rate_may_not_rise_much_over_the_stable_one_even_below_the_cap() -> None:
    stable = VersionStats(requests=1000, errors=0, p90_latency_ms=800, cost_usd=1, tasks=1000)
    decision = decide(_candidate(errors=1, requests=25), stable)  # 4% < 5% cap, but +4 points
    assert [c.name for c in decision.checks if c.status == "failed"] == ["error_rate"]


def test_too_little_traffic_holds_the_candidate_back_unless_allowed() -> None:
    thin = _candidate(requests=3, tasks=3, cost_usd=0.003)
    held = decide(thin, STABLE)
    assert not held.promote and held.checks[0].status == "insufficient"
    allowed = decide(thin, STABLE, GatePolicy(promote_without_traffic=True))
    assert allowed.promote


def test_an_absolute_cost_cap_applies_without_a_stable_version() -> None:
    policy = GatePolicy(max_cost_per_task_usd=0.0005, min_eval_score=90)
    decision = decide(_candidate(), None, policy)  # $0.001 per task
    assert [c.name for c in decision.checks if c.status == "failed"] == ["cost_per_task"]


def test_a_pre_traffic_decision_judges_the_evals_only() -> None:
    policy = GatePolicy(min_eval_score=90)
    assert decide(VersionStats(eval_score=92), None, policy, traffic=False).promote
    low = decide(VersionStats(eval_score=80), None, policy, traffic=False)
    assert not low.promote and low.reasons == ["eval_score: 80.00 (stable n/a, at least 90.00)"]
    missing = decide(VersionStats(), None, policy, traffic=False)
    assert not missing.promote and missing.checks[0].status == "insufficient"


def test_p90_is_the_nearest_rank() -> None:
    assert p90([]) is None
    assert p90([5.0]) == 5.0
    assert p90([float(v) for v in range(1, 11)]) == 9.0
    assert p90([float(v) for v in range(1, 101)]) == 90.0

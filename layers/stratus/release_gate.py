"""The release gate: promote a candidate version of an agent, or roll it back, and say why.

One decision function for every place a release is judged: the CodeDeploy
pre- and post-traffic hooks on AWS, and ``stratus canary`` on the local cloud.
It compares what the candidate did with what the stable version did over the
same window (error rate, p90 latency, cost per task) and with absolute limits
(error rate, cost per task, eval score), and returns every check it made, so the
caller can print or log the reasons.

A check with too little traffic to judge (fewer than ``min_requests`` answers) is
not failed on noise: it is reported ``insufficient``, and the decision is
``promote`` only if ``promote_without_traffic`` allows it (a canary that got no
traffic proves nothing, so the default is to hold it back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CheckStatus = Literal["passed", "failed", "insufficient"]


class GatePolicy(BaseModel):
    """How a candidate is judged (per stage: ``cdk.json`` ``release_gate``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Below this many answers the traffic checks cannot judge (``insufficient``).
    min_requests: int = Field(default=20, ge=1)
    #: The candidate's share of failed answers may not exceed this ...
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    #: ... nor the stable version's by more than this (absolute, 0.02 = 2 points).
    max_error_rate_increase: float = Field(default=0.02, ge=0, le=1)
    #: The candidate's p90 latency may be at most this multiple of the stable one's.
    max_p90_latency_ratio: float = Field(default=1.5, gt=0)
    #: Its cost per task may be at most this multiple of the stable one's ...
    max_cost_per_task_ratio: float = Field(default=1.25, gt=0)
    #: ... and at most this many USD per task (None: no absolute limit).
    max_cost_per_task_usd: float | None = Field(default=None, gt=0)
    #: The eval score (0-100) the candidate must reach (None: not required).
    min_eval_score: float | None = Field(default=None, ge=0, le=100)
    #: ... and it may be at most this many points below the stable version's.
    max_eval_regression: float = Field(default=2.0, ge=0, le=100)
    #: Promote a candidate whose traffic checks could not judge for lack of answers.
    promote_without_traffic: bool = False


@dataclass(frozen=True)
class VersionStats:
    """What one version did over the window (a canary's, or the stable version's)."""

    requests: int = 0
    errors: int = 0
    #: p90 of the answers' latency, in milliseconds (None: no answers).
    p90_latency_ms: float | None = None
    #: Total cost of the tasks (USD) and how many tasks it was spread over.
    cost_usd: float = 0.0
    tasks: int = 0
    #: The version's eval score, 0-100 (None: not evaluated).
    eval_score: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost_per_task(self) -> float | None:
        return self.cost_usd / self.tasks if self.tasks else None


def p90(values: Sequence[float]) -> float | None:
    """The nearest-rank 90th percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Decision:
    promote: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def action(self) -> Literal["promote", "rollback"]:
        return "promote" if self.promote else "rollback"

    @property
    def reasons(self) -> list[str]:
        """Why it was rolled back (failed and, unless allowed, insufficient checks)."""
        return [f"{c.name}: {c.detail}" for c in self.checks if c.status != "passed"]

    def summary(self) -> str:
        if self.promote:
            return "promote: " + "; ".join(f"{c.name} {c.detail}" for c in self.checks)
        return "rollback: " + "; ".join(self.reasons)

    def to_json(self) -> dict[str, object]:
        return {"action": self.action, "checks": [c.to_json() for c in self.checks]}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value * 100:.1f}%"
    if unit == "$":
        return f"${value:.6f}"
    return f"{value:.0f} ms" if unit == "ms" else f"{value:.2f}"


def _traffic_checks(
    candidate: VersionStats, stable: VersionStats | None, policy: GatePolicy
) -> list[Check]:
    if candidate.requests < policy.min_requests:
        detail = f"{candidate.requests} answers, fewer than the {policy.min_requests} needed"
        return [Check("traffic", "insufficient", detail)]
    checks: list[Check] = []
    rate = candidate.error_rate or 0.0
    limit = policy.max_error_rate
    base = stable.error_rate if stable is not None and stable.requests else None
    if base is not None:
        limit = min(limit, base + policy.max_error_rate_increase)
    checks.append(
        Check(
            "error_rate",
            "passed" if rate <= limit else "failed",
            f"{_fmt(rate, '%')} (stable {_fmt(base, '%')}, at most {_fmt(limit, '%')})",
        )
    )
    if stable is not None and stable.p90_latency_ms and candidate.p90_latency_ms is not None:
        bound = stable.p90_latency_ms * policy.max_p90_latency_ratio
        checks.append(
            Check(
                "p90_latency",
                "passed" if candidate.p90_latency_ms <= bound else "failed",
                f"{_fmt(candidate.p90_latency_ms, 'ms')} (stable "
                f"{_fmt(stable.p90_latency_ms, 'ms')}, at most {_fmt(bound, 'ms')})",
            )
        )
    cost = candidate.cost_per_task
    if cost is not None:
        bounds: list[float] = []
        base_cost = stable.cost_per_task if stable is not None else None
        if base_cost:
            bounds.append(base_cost * policy.max_cost_per_task_ratio)
        if policy.max_cost_per_task_usd is not None:
            bounds.append(policy.max_cost_per_task_usd)
        if bounds:
            bound = min(bounds)
            checks.append(
                Check(
                    "cost_per_task",
                    "passed" if cost <= bound else "failed",
                    f"{_fmt(cost, '$')} (stable {_fmt(base_cost, '$')}, "
                    f"at most {_fmt(bound, '$')})",
                )
            )
    return checks


def _eval_check(
    candidate: VersionStats, stable: VersionStats | None, policy: GatePolicy
) -> Check | None:
    floors: list[float] = []
    if policy.min_eval_score is not None:
        floors.append(policy.min_eval_score)
    base = stable.eval_score if stable is not None else None
    if base is not None:
        floors.append(base - policy.max_eval_regression)
    if not floors:
        return None
    floor = max(floors)
    if candidate.eval_score is None:
        return Check("eval_score", "insufficient", f"not evaluated (needs at least {floor:.2f})")
    score = candidate.eval_score
    return Check(
        "eval_score",
        "passed" if score >= floor else "failed",
        f"{score:.2f} (stable {_fmt(base)}, at least {floor:.2f})",
    )


def decide(
    candidate: VersionStats,
    stable: VersionStats | None = None,
    policy: GatePolicy | None = None,
    *,
    traffic: bool = True,
) -> Decision:
    """Promote ``candidate`` or roll it back; ``traffic=False`` judges evals only (a
    pre-traffic hook: the candidate has served nobody yet)."""
    policy = policy or GatePolicy()
    checks = _traffic_checks(candidate, stable, policy) if traffic else []
    evals = _eval_check(candidate, stable, policy)
    if evals is not None:
        checks.append(evals)
    failed = any(c.status == "failed" for c in checks)
    insufficient = any(c.status == "insufficient" for c in checks)
    promote = not failed and (not insufficient or policy.promote_without_traffic)
    return Decision(promote=promote, checks=checks)

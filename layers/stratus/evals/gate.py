"""Scores, baselines and the gate's verdict.

An agent's score is the mean pass rate of its cases times 100. The gate fails
an agent when the score is below its suite's ``threshold``, when a ``critical``
case fails, or when the score dropped by more than ``max_regression`` points
against the committed baseline (``functions/agents/<agent>/evals/baseline.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratus.evals.models import Suite
from stratus.evals.runner import CaseResult


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str
    score: float = Field(ge=0, le=100)
    #: Case id -> pass rate (0-1) when the baseline was taken.
    cases: dict[str, float]
    model: str
    #: The agent spec's version the baseline was taken on.
    release: str


def load_baseline(path: Path) -> Baseline | None:
    if not path.is_file():
        return None
    return Baseline.model_validate_json(path.read_text(encoding="utf-8"))


def write_baseline(path: Path, baseline: Baseline) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(baseline.model_dump(mode="json"), indent=2, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")


def score(cases: Sequence[CaseResult]) -> float:
    return round(100 * sum(c.pass_rate for c in cases) / len(cases), 2) if cases else 0.0


@dataclass
class AgentVerdict:
    agent: str
    cases: list[CaseResult]
    threshold: float
    max_regression: float
    model: str
    release: str
    baseline: Baseline | None = None
    reasons: list[str] = field(default_factory=list)
    #: Case ids whose pass rate is below the baseline's.
    regressed: list[str] = field(default_factory=list)
    baseline_score: float | None = None
    #: Facts that do not fail the gate (a baseline taken on another model or release).
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return score(self.cases)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def cost_usd(self) -> float:
        """What the agent's runs cost (the judge's cost is apart: ``judge_cost_usd``)."""
        return sum(c.cost_usd for c in self.cases)

    @property
    def judge_cost_usd(self) -> float:
        return sum(c.judge_cost_usd for c in self.cases)

    @property
    def pass_rate(self) -> float:
        """The share of cases that passed (0-1): the ``EvalPassRate`` metric."""
        return sum(1 for c in self.cases if c.passed) / len(self.cases) if self.cases else 0.0

    def as_baseline(self) -> Baseline:
        return Baseline(
            agent=self.agent,
            score=self.score,
            cases={c.case.id: round(c.pass_rate, 4) for c in self.cases},
            model=self.model,
            release=self.release,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "passed": self.passed,
            "score": self.score,
            "baseline_score": self.baseline_score,
            "threshold": self.threshold,
            "max_regression": self.max_regression,
            "model": self.model,
            "release": self.release,
            "reasons": self.reasons,
            "notes": self.notes,
            "regressed": self.regressed,
            "cost_usd": self.cost_usd,
            "judge_cost_usd": self.judge_cost_usd,
            "pass_rate": round(self.pass_rate, 4),
            "cases": [c.to_json() for c in self.cases],
        }


def judge(
    agent: str,
    suites: Sequence[Suite],
    cases: list[CaseResult],
    *,
    model: str,
    release: str,
    baseline: Baseline | None,
) -> AgentVerdict:
    """The verdict for one agent; with several suite files the strictest settings apply."""
    verdict = AgentVerdict(
        agent=agent,
        cases=cases,
        threshold=max((s.threshold for s in suites), default=0.0),
        max_regression=min((s.max_regression for s in suites), default=2.0),
        model=model,
        release=release,
        baseline=baseline,
    )
    now = verdict.score
    if now < verdict.threshold:
        verdict.reasons.append(f"score {now:.2f} is below the threshold {verdict.threshold:.2f}")
    for case in cases:
        if case.case.critical and not case.passed:
            verdict.reasons.append(
                f"critical case {case.case.id} failed ({case.passes}/{case.k} passed)"
            )
    if baseline is not None:
        if baseline.model != model:
            verdict.notes.append(f"the baseline was taken on model {baseline.model}, not {model}")
        if baseline.release != release:
            verdict.notes.append(f"the baseline was taken on release {baseline.release}")
        # Compare like with like: the baseline over the cases of this run that it knows.
        known = [c for c in cases if c.case.id in baseline.cases]
        if known:
            before = round(100 * sum(baseline.cases[c.case.id] for c in known) / len(known), 2)
            after = score(known)
            verdict.baseline_score = before
            verdict.regressed = [
                c.case.id for c in known if c.pass_rate < baseline.cases[c.case.id] - 1e-9
            ]
            drop = round(before - after, 2)
            if drop > verdict.max_regression:
                verdict.reasons.append(
                    f"score dropped {drop:.2f} points against the baseline "
                    f"({before:.2f} -> {after:.2f}; at most {verdict.max_regression:.2f}); "
                    f"regressed: {', '.join(verdict.regressed)}"
                )
    return verdict

"""Runs eval cases against a target with bounded concurrency.

A :class:`Target` runs one agent on one input and reports an
:class:`~stratus.evals.checks.Observation` (answer, cost, latency, tokens, tool
calls). Each case runs ``samples`` times; ``require`` (all, majority, any) says
how many samples must pass (pass@k), and the case's pass rate (passes/k) is
what the agent's score averages. After a sample's deterministic checks, each
``llm_judge`` assertion is scored by a :class:`Scorer` (``stratus.evals.judge``)
when the run has one; its cost is kept apart from the agent's (``judge_cost_usd``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from stratus.evals.checks import AssertionResult, Observation, check
from stratus.evals.models import Case, Guarded, LlmJudge, Suite


class Target(Protocol):
    """Where the cases run: the in-process runtime, later a local cloud or a stage."""

    def run(self, agent: str, user_input: str | dict[str, Any] | list[str]) -> Observation:
        """One run; a list of turns runs one session of an agent with sessions."""
        ...

    def output_schema(self, agent: str) -> dict[str, Any] | None: ...


class Scorer(Protocol):
    """Scores one ``llm_judge`` assertion (``stratus.evals.judge.Judge``)."""

    def score(self, assertion: LlmJudge, case: Case, seen: Observation) -> AssertionResult: ...


def _judge_cost(result: AssertionResult) -> float:
    return float(getattr(result, "cost_usd", 0.0) or 0.0)


def _judge_tokens(result: AssertionResult) -> int:
    return int(getattr(result, "input_tokens", 0) or 0) + int(
        getattr(result, "output_tokens", 0) or 0
    )


@dataclass
class SampleResult:
    passed: bool
    assertions: list[AssertionResult] = field(default_factory=list)
    observation: Observation | None = None
    error: str | None = None

    @property
    def failures(self) -> list[AssertionResult]:
        return [a for a in self.assertions if a.status == "failed"]

    @property
    def judge_cost_usd(self) -> float:
        """What judging this sample cost (apart from the agent's own cost)."""
        return sum(_judge_cost(a) for a in self.assertions)

    @property
    def judge_tokens(self) -> int:
        return sum(_judge_tokens(a) for a in self.assertions)

    def to_json(self) -> dict[str, Any]:
        seen = self.observation
        return {
            "passed": self.passed,
            "error": self.error,
            "assertions": [a.to_json() for a in self.assertions],
            "answer": None if seen is None else seen.output,
            "model": None if seen is None else seen.model,
            "cost_usd": None if seen is None else seen.cost_usd,
            "judge_cost_usd": self.judge_cost_usd,
            "judge_tokens": self.judge_tokens,
            "latency_s": None if seen is None else round(seen.latency_s, 4),
            "tokens": None if seen is None else seen.tokens,
            "tool_calls": []
            if seen is None
            else [{"name": c.name, "arguments": c.arguments} for c in seen.tool_calls],
        }


@dataclass
class CaseResult:
    agent: str
    case: Case
    samples: list[SampleResult]

    @property
    def passes(self) -> int:
        return sum(1 for s in self.samples if s.passed)

    @property
    def k(self) -> int:
        return len(self.samples)

    @property
    def pass_rate(self) -> float:
        return self.passes / self.k if self.k else 0.0

    @property
    def passed(self) -> bool:
        if self.case.require == "all":
            return self.passes == self.k
        if self.case.require == "any":
            return self.passes >= 1
        return self.passes * 2 > self.k

    @property
    def skipped(self) -> bool:
        """Every assertion of every sample was skipped (only LLM-judge assertions)."""
        return all(
            s.error is None and s.assertions and all(a.status == "skipped" for a in s.assertions)
            for s in self.samples
        )

    @property
    def cost_usd(self) -> float:
        return sum(s.observation.cost_usd for s in self.samples if s.observation)

    @property
    def judge_cost_usd(self) -> float:
        return sum(s.judge_cost_usd for s in self.samples)

    def first_failure(self) -> SampleResult | None:
        return next((s for s in self.samples if not s.passed), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "tags": self.case.tags,
            "require": self.case.require,
            "passed": self.passed,
            "passes": self.passes,
            "k": self.k,
            "pass_rate": round(self.pass_rate, 4),
            "cost_usd": self.cost_usd,
            "judge_cost_usd": self.judge_cost_usd,
            "samples": [s.to_json() for s in self.samples],
        }


@dataclass(frozen=True)
class Planned:
    """One case of one agent's suite, with the number of samples it runs."""

    agent: str
    case: Case
    k: int


def plan(
    suites: Sequence[Suite], *, tag: str | None = None, samples: int | None = None
) -> list[Planned]:
    out = []
    for suite in suites:
        for case in suite.cases:
            if tag is None or tag in case.tags:
                out.append(Planned(suite.agent, case, samples or case.samples))
    return out


def run_sample(target: Target, agent: str, case: Case, judge: Scorer | None = None) -> SampleResult:
    try:
        # A target that knows case kinds (invoke, session, job) runs the whole case.
        run_case = getattr(target, "run_case", None)
        seen = run_case(agent, case) if run_case is not None else target.run(agent, case.input)
    except Exception as error:  # the agent failed: the sample fails, the run goes on
        code = getattr(error, "code", None)
        name = code if isinstance(code, str) else type(error).__name__
        seen = _rejection(error, case) if name == "input_rejected" else None
        if seen is None:
            return SampleResult(False, error=f"{name}: {error}")
    schema = target.output_schema(agent)
    results = [check(assertion, seen, schema) for assertion in case.assertions]
    if judge is not None:  # after the deterministic checks: one judge call per rubric
        results = [
            judge.score(assertion, case, seen) if isinstance(assertion, LlmJudge) else result
            for assertion, result in zip(case.assertions, results, strict=True)
        ]
    ok = all(r.status != "failed" for r in results)
    return SampleResult(ok, results, seen)


def _rejection(error: Exception, case: Case) -> Observation | None:
    """A refused input as an observation, for a case that asserts ``guarded``."""
    if not any(isinstance(a, Guarded) for a in case.assertions):
        return None
    details = getattr(error, "details", None) or {}
    category = details.get("category") if isinstance(details, dict) else None
    return Observation(output="", rejected=str(category or "unknown"))


Progress = Callable[[int, int, str], None]


def run_cases(
    planned: Sequence[Planned],
    target: Target,
    *,
    concurrency: int = 4,
    progress: Progress | None = None,
    judge: Scorer | None = None,
) -> list[CaseResult]:
    """Every sample of every planned case, at most ``concurrency`` at a time, in plan order."""
    units = [(index, item) for index, item in enumerate(planned) for _ in range(item.k)]
    slots: list[list[SampleResult]] = [[] for _ in planned]
    done = 0

    def one(unit: tuple[int, Planned]) -> tuple[int, SampleResult]:
        index, item = unit
        return index, run_sample(target, item.agent, item.case, judge)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="eval") as pool:
        for index, sample in pool.map(one, units):
            slots[index].append(sample)
            done += 1
            if progress is not None:
                item = planned[index]
                progress(done, len(units), f"{item.agent}/{item.case.id}")
    return [CaseResult(item.agent, item.case, slots[i]) for i, item in enumerate(planned)]

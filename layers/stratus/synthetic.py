"""Synthetic traffic: a small scenario against every agent's ``live`` alias, on a schedule.

A stage with ``synthetic`` settings (staging) runs it every few minutes
(``infra.constructs.synthetic``), so a broken agent shows up before any customer
finds it, and a stage nobody calls still proves it answers. Nothing here is new
machinery: the cases are the agents' own ``critical`` eval cases (what a release's
pre-traffic hook runs, :func:`stratus.release_hooks.critical_cases`; ``smoke`` takes the
first :data:`SMOKE_CASES_PER_AGENT` of each agent), each run once,
through :class:`stratus.evals.lambda_target.LambdaVersionTarget` with the ``live``
qualifier: a Lambda ``Invoke`` with an API-Gateway-shaped event whose authorizer
context names the synthetic tenant (IAM on the alias is the authority, no API key).

Every run publishes ``SyntheticSuccess`` and ``SyntheticFailures`` (counts of cases,
dimension ``scenario``; per agent with ``agent`` too), zero included, so an alarm can
treat a missing data point as a scenario that stopped running. A failed case raises
:class:`SyntheticFailed` after the metrics are out: the invocation fails, visibly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from stratus.evals.lambda_target import LambdaVersionTarget
from stratus.evals.models import Suite
from stratus.evals.runner import CaseResult, Planned, Target, run_cases
from stratus.evals.target import EVAL_TENANT
from stratus.observability import NAMESPACE
from stratus.release_hooks import critical_cases

SUCCESS_METRIC = "SyntheticSuccess"
FAILURE_METRIC = "SyntheticFailures"
#: The variable carrying :class:`SyntheticConfig` as JSON (set by the stack).
CONFIG_ENV = "STRATUS_SYNTHETIC"
#: The qualifier every synthetic call goes through: what customers are served.
LIVE = "live"
#: The ``smoke`` scenario: each agent's first critical cases, this many (suite order), so a
#: run every few minutes stays a handful of model calls.
SMOKE_CASES_PER_AGENT = 3
Scenario = Literal["smoke"]


class SyntheticConfig(BaseModel):
    """What the synthetic function runs: the scenario and each agent's function name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: Scenario = "smoke"
    #: agent -> its API function's name (the ``live`` alias is invoked).
    functions: dict[str, str] = Field(min_length=1)
    #: The tenant the calls run for: the eval tenant, whose fixtures the evals assume.
    tenant_id: str = EVAL_TENANT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SyntheticConfig:
        raw = environ.get(CONFIG_ENV)
        if not raw:
            raise ValueError(f"{CONFIG_ENV} is not set")
        return cls.model_validate(json.loads(raw))


@dataclass(frozen=True)
class Outcome:
    """One agent's cases of one run."""

    agent: str
    passed: int
    failed: int
    failures: tuple[str, ...] = ()


class SyntheticFailed(Exception):
    """At least one synthetic case failed (the metrics are already published)."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        failed = [f"{o.agent}: {', '.join(o.failures)}" for o in outcomes if o.failed]
        super().__init__("synthetic cases failed: " + "; ".join(failed))
        self.outcomes = list(outcomes)


class SyntheticSink(Protocol):
    def publish(self, scenario: str, outcomes: Sequence[Outcome]) -> None: ...


class EmfSyntheticSink:
    """Powertools EMF on stdout (CloudWatch Logs makes the metrics; no PutMetricData IAM)."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self._namespace = namespace

    def publish(self, scenario: str, outcomes: Sequence[Outcome]) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        def emit(name: str, value: int, agent: str | None) -> None:
            with single_metric(
                name=name, unit=MetricUnit.Count, value=value, namespace=self._namespace
            ) as metric:
                metric.add_dimension(name="scenario", value=scenario)
                if agent is not None:
                    metric.add_dimension(name="agent", value=agent)

        for name, count in ((SUCCESS_METRIC, _passed), (FAILURE_METRIC, _failed)):
            emit(name, sum(count(o) for o in outcomes), None)
            for outcome in outcomes:
                emit(name, count(outcome), outcome.agent)


def _passed(outcome: Outcome) -> int:
    return outcome.passed


def _failed(outcome: Outcome) -> int:
    return outcome.failed


def smoke_plan(suites: Sequence[Suite]) -> list[Planned]:
    """Each agent's first :data:`SMOKE_CASES_PER_AGENT` critical cases, once each (a
    synthetic run samples; the release gate judges)."""
    planned: list[Planned] = []
    for p in critical_cases(suites):
        if sum(1 for q in planned if q.agent == p.agent) < SMOKE_CASES_PER_AGENT:
            planned.append(Planned(p.agent, p.case, 1))
    return planned


def outcomes_of(agents: Sequence[str], results: Sequence[CaseResult]) -> list[Outcome]:
    outcomes = []
    for agent in agents:
        mine = [r for r in results if r.agent == agent]
        failed = tuple(r.case.id for r in mine if not r.passed)
        outcomes.append(Outcome(agent, len(mine) - len(failed), len(failed), failed))
    return outcomes


def run_scenario(
    target: Target,
    agents: Sequence[str],
    *,
    suites_for: Callable[[str], Sequence[Suite]],
    sink: SyntheticSink,
    scenario: str = "smoke",
) -> list[Outcome]:
    """Run the scenario against ``target``, publish its counts, raise if a case failed.

    An agent without a critical case counts one failure (``no_critical_case``): a
    synthetic check that checks nothing must not look green."""
    planned = [p for agent in agents for p in smoke_plan(suites_for(agent))]
    results = run_cases(planned, target, concurrency=4)
    outcomes = []
    for outcome in outcomes_of(agents, results):
        if outcome.passed + outcome.failed == 0:
            outcome = Outcome(outcome.agent, 0, 1, ("no_critical_case",))
        outcomes.append(outcome)
    sink.publish(scenario, outcomes)
    if any(o.failed for o in outcomes):
        raise SyntheticFailed(outcomes)
    return outcomes


def live_target(
    lambda_client: Any,
    config: SyntheticConfig,
    schema_for: Callable[[str], dict[str, Any] | None],
) -> LambdaVersionTarget:
    """The agents' ``live`` aliases, called as the synthetic tenant."""
    return LambdaVersionTarget(
        lambda_client,
        config.functions,
        LIVE,
        {agent: schema_for(agent) for agent in config.functions},
        tenant_id=config.tenant_id,
    )

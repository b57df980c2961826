"""The CodeDeploy lifecycle hooks of a release: judge a new version, report Succeeded or Failed.

CodeDeploy invokes a hook with ``{"DeploymentId", "LifecycleEventHookExecutionId"}``
and waits for ``PutLifecycleEventHookExecutionStatus``. Both hooks here:

1. find what is being deployed: the deployment's one Lambda target
   (``ListDeploymentTargets`` + ``GetDeploymentTarget``: function, alias, current
   and target version) and, from each version's configuration
   (``GetFunctionConfiguration`` with ``Qualifier``), its agent (``STRATUS_AGENT``),
   its release (``STRATUS_RELEASE``) and whether it is the agent's API function;
2. judge it with :func:`stratus.release_gate.decide`, the one decision function;
3. ALWAYS report a status: any exception is logged and reported ``Failed`` (a hook
   that never answers would hold the deployment for an hour).

**Pre-traffic** (``traffic=False``: the version has served nobody yet). On an
agent's API function it runs the agent's ``critical`` eval cases (job cases need
the queue and are left out) against the new version through Lambda ``Invoke`` with
``Qualifier`` (:class:`stratus.evals.lambda_target.LambdaVersionTarget`), publishes
``EvalScore``/``EvalPassRate`` for ``agent`` + ``release``, and fails when the
score is under the gate's floor or any critical case failed. On a worker (whose
handler takes SQS and Step Functions events, not proxy events) it judges the
``EvalScore`` already published for the same release: the stack moves a worker's
alias only after its API function's, whose hook has just published it.

**Post-traffic** (``traffic=True``): the new version against the old over the
deployment's window (CloudWatch ``GetMetricData``): requests, errors and p90
duration of each version (Lambda's ``Resource`` = ``function:version``
dimension), cost per task of each release (``CostMicroUSD`` / ``Tasks`` over
``agent`` + ``release``), and each release's latest eval score.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stratus.evals.gate import score as eval_score
from stratus.evals.lambda_target import LambdaVersionTarget
from stratus.evals.metrics import PASS_RATE_METRIC, SCORE_METRIC, EvalMetrics, MetricSink
from stratus.evals.models import Case, Suite
from stratus.evals.runner import Planned, run_cases
from stratus.evals.target import EVAL_TENANT
from stratus.observability import NAMESPACE, logger
from stratus.release_gate import Check, Decision, GatePolicy, VersionStats, decide

HookName = Literal["pre_traffic", "post_traffic"]
Status = Literal["Succeeded", "Failed"]
#: The variable that carries the stage's gate policy (JSON of ``GatePolicy``).
GATE_ENV = "STRATUS_RELEASE_GATE"
COST_METRIC = "CostMicroUSD"
TASKS_METRIC = "Tasks"
#: How far back a release's eval score is looked up (a worker's, a stable release's).
EVAL_LOOKBACK = timedelta(days=14)
API_HANDLER_MODULE = "functions.handlers.api."


class HookEvent(BaseModel):
    """What CodeDeploy sends a Lambda lifecycle hook."""

    model_config = ConfigDict(extra="allow", frozen=True)

    deployment_id: str = Field(alias="DeploymentId", min_length=1)
    execution_id: str = Field(alias="LifecycleEventHookExecutionId", min_length=1)


@dataclass(frozen=True)
class Target:
    """The deployment's Lambda target: which alias moves from which version to which."""

    function: str
    alias: str
    current_version: str
    target_version: str


@dataclass(frozen=True)
class VersionInfo:
    """One version of an agent's function, from its configuration."""

    function: str
    version: str
    agent: str
    release: str
    api: bool

    @property
    def resource(self) -> str:
        """Lambda's ``Resource`` metric dimension of this version."""
        return f"{self.function}:{self.version}"


@dataclass(frozen=True)
class HookOutcome:
    hook: HookName
    deployment_id: str
    status: Status
    decision: Decision | None = None
    error: str | None = None
    agent: str | None = None
    release: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "deployment_id": self.deployment_id,
            "status": self.status,
            "agent": self.agent,
            "release": self.release,
            "decision": None if self.decision is None else self.decision.to_json(),
            "summary": None if self.decision is None else self.decision.summary(),
            "error": self.error,
        }


def policy_from_env(environ: Mapping[str, str] | None = None) -> GatePolicy:
    raw = (os.environ if environ is None else environ).get(GATE_ENV, "")
    return GatePolicy.model_validate_json(raw) if raw.strip() else GatePolicy()


def critical_cases(suites: Sequence[Suite]) -> list[Planned]:
    """The suites' ``critical`` cases that one function version can run (no job cases)."""
    return [
        Planned(suite.agent, case, case.samples)
        for suite in suites
        for case in suite.cases
        if case.critical and case.mode != "job"
    ]


def _critical_check(failed: Sequence[Case], ran: int) -> Check:
    if failed:
        names = ", ".join(c.id for c in failed)
        return Check("critical_cases", "failed", f"{len(failed)} of {ran} failed: {names}")
    return Check("critical_cases", "passed", f"{ran} of {ran} passed")


class ReleaseHooks:
    """The pre- and post-traffic hooks over boto3 CodeDeploy, Lambda and CloudWatch clients."""

    def __init__(
        self,
        *,
        codedeploy: Any,
        lambda_client: Any,
        cloudwatch: Any,
        policy: GatePolicy,
        sink: MetricSink,
        suites_for: Callable[[str], Sequence[Suite]],
        schema_for: Callable[[str], dict[str, Any] | None],
        tenant_id: str = EVAL_TENANT,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        concurrency: int = 4,
    ) -> None:
        self._codedeploy = codedeploy
        self._lambda = lambda_client
        self._cloudwatch = cloudwatch
        self.policy = policy
        self._sink = sink
        self._suites_for = suites_for
        self._schema_for = schema_for
        self._tenant = tenant_id
        self._now = now
        self._concurrency = concurrency

    # -- the two hooks --------------------------------------------------------------------

    def pre_traffic(self, event: Mapping[str, Any]) -> HookOutcome:
        return self._run("pre_traffic", event)

    def post_traffic(self, event: Mapping[str, Any]) -> HookOutcome:
        return self._run("post_traffic", event)

    def _run(self, hook: HookName, event: Mapping[str, Any]) -> HookOutcome:
        try:
            parsed = HookEvent.model_validate(event)
        except Exception as error:  # nothing to report to: CodeDeploy times the hook out
            logger.error("release hook: not a CodeDeploy lifecycle event", extra={"hook": hook})
            return HookOutcome(hook, "", "Failed", error=f"invalid_event: {error}")
        outcome: HookOutcome
        try:
            target = self.target(parsed.deployment_id)
            candidate = self.version_info(target.function, target.target_version)
            stable = self.version_info(target.function, target.current_version)
            if hook == "pre_traffic":
                decision = self._pre(candidate, stable)
            else:
                decision = self._post(parsed.deployment_id, candidate, stable)
            outcome = HookOutcome(
                hook,
                parsed.deployment_id,
                "Succeeded" if decision.promote else "Failed",
                decision=decision,
                agent=candidate.agent,
                release=candidate.release,
            )
        except Exception as error:  # any failure fails the deployment, never hangs it
            logger.exception("release hook failed", extra={"hook": hook})
            outcome = HookOutcome(
                hook, parsed.deployment_id, "Failed", error=f"{type(error).__name__}: {error}"
            )
        self._report(parsed, outcome)
        return outcome

    def _report(self, event: HookEvent, outcome: HookOutcome) -> None:
        logger.info("release hook decision", extra=outcome.to_json())
        self._codedeploy.put_lifecycle_event_hook_execution_status(
            deploymentId=event.deployment_id,
            lifecycleEventHookExecutionId=event.execution_id,
            status=outcome.status,
        )

    # -- what is deployed -------------------------------------------------------------------

    def target(self, deployment_id: str) -> Target:
        ids = self._codedeploy.list_deployment_targets(deploymentId=deployment_id)["targetIds"]
        if len(ids) != 1:
            raise LookupError(f"deployment {deployment_id} has {len(ids)} targets, not one")
        found = self._codedeploy.get_deployment_target(deploymentId=deployment_id, targetId=ids[0])
        info = found["deploymentTarget"]["lambdaTarget"]["lambdaFunctionInfo"]
        return Target(
            function=str(info["functionName"]),
            alias=str(info["functionAlias"]),
            current_version=str(info["currentVersion"]),
            target_version=str(info["targetVersion"]),
        )

    def version_info(self, function: str, version: str) -> VersionInfo:
        config = self._lambda.get_function_configuration(FunctionName=function, Qualifier=version)
        env = (config.get("Environment") or {}).get("Variables") or {}
        agent, release = env.get("STRATUS_AGENT"), env.get("STRATUS_RELEASE")
        if not agent or not release:
            raise LookupError(f"{function}:{version} names no STRATUS_AGENT/STRATUS_RELEASE")
        api = str(config.get("Handler", "")).startswith(API_HANDLER_MODULE)
        return VersionInfo(function, version, agent, release, api)

    # -- pre-traffic --------------------------------------------------------------------------

    def _pre(self, candidate: VersionInfo, stable: VersionInfo) -> Decision:
        base = VersionStats(eval_score=self._latest_eval(stable))
        if not candidate.api:
            # A worker: the score its API function's hook published for the same release.
            return decide(
                VersionStats(eval_score=self._latest_eval(candidate)),
                base,
                self.policy,
                traffic=False,
            )
        planned = critical_cases(self._suites_for(candidate.agent))
        if not planned:
            decision = decide(VersionStats(), base, self.policy, traffic=False)
            checks = [*decision.checks, Check("critical_cases", "insufficient", "no cases")]
            return Decision(decision.promote and self.policy.promote_without_traffic, checks)
        target = LambdaVersionTarget(
            self._lambda,
            {candidate.agent: candidate.function},
            candidate.version,
            {candidate.agent: self._schema_for(candidate.agent)},
            tenant_id=self._tenant,
        )
        results = run_cases(planned, target, concurrency=self._concurrency)
        score = eval_score(results)
        passed = sum(1 for r in results if r.passed) / len(results)
        self._sink.publish([EvalMetrics(candidate.agent, candidate.release, score, passed)])
        decision = decide(VersionStats(eval_score=score), base, self.policy, traffic=False)
        critical = _critical_check([r.case for r in results if not r.passed], len(results))
        checks = [*decision.checks, critical]
        return Decision(decision.promote and critical.status == "passed", checks)

    # -- metrics ------------------------------------------------------------------------------

    def _query(
        self, queries: list[dict[str, Any]], start: datetime, end: datetime
    ) -> dict[str, list[float]]:
        values: dict[str, list[float]] = {q["Id"]: [] for q in queries}
        kwargs: dict[str, Any] = {
            "MetricDataQueries": queries,
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampDescending",
        }
        while True:
            page = self._cloudwatch.get_metric_data(**kwargs)
            for result in page.get("MetricDataResults", []):
                values.setdefault(result["Id"], []).extend(float(v) for v in result["Values"])
            token = page.get("NextToken")
            if not token:
                return values
            kwargs["NextToken"] = token

    @staticmethod
    def _stat(
        query_id: str,
        name: str,
        dims: Mapping[str, str],
        stat: str,
        period: int,
        namespace: str = NAMESPACE,
    ) -> dict[str, Any]:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": namespace,
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                },
                "Period": period,
                "Stat": stat,
            },
            "ReturnData": True,
        }

    def _latest_eval(self, version: VersionInfo) -> float | None:
        """The newest ``EvalScore`` of the version's release (None: never evaluated)."""
        end = self._now()
        dims = {"agent": version.agent, "release": version.release}
        query = self._stat("score", SCORE_METRIC, dims, "Minimum", 3600)
        values = self._query([query], end - EVAL_LOOKBACK, end)["score"]
        return values[0] if values else None

    # -- post-traffic -------------------------------------------------------------------------

    def _post(self, deployment_id: str, candidate: VersionInfo, stable: VersionInfo) -> Decision:
        info = self._codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        end = self._now()
        start = info.get("createTime") or end - timedelta(minutes=5)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        seconds = max(60.0, (end - start).total_seconds())
        period = int(math.ceil(seconds / 60.0) * 60)
        start = end - timedelta(seconds=period)
        queries: list[dict[str, Any]] = []
        for key, version in (("c", candidate), ("s", stable)):
            lambda_dims = {"FunctionName": version.function, "Resource": version.resource}
            release_dims = {"agent": version.agent, "release": version.release}
            for name, metric, stat in (
                ("inv", "Invocations", "Sum"),
                ("err", "Errors", "Sum"),
                ("p90", "Duration", "p90"),
            ):
                queries.append(
                    self._stat(f"{key}_{name}", metric, lambda_dims, stat, period, "AWS/Lambda")
                )
            queries.append(self._stat(f"{key}_cost", COST_METRIC, release_dims, "Sum", period))
            queries.append(self._stat(f"{key}_tasks", TASKS_METRIC, release_dims, "Sum", period))
        values = self._query(queries, start, end)

        def total(query_id: str) -> float:
            return sum(values.get(query_id, []))

        def stats(key: str, version: VersionInfo) -> VersionStats:
            p90s = values.get(f"{key}_p90") or []
            return VersionStats(
                requests=int(total(f"{key}_inv")),
                errors=int(total(f"{key}_err")),
                p90_latency_ms=max(p90s) if p90s else None,
                cost_usd=total(f"{key}_cost") / 1_000_000,
                tasks=int(total(f"{key}_tasks")),
                eval_score=self._latest_eval(version),
            )

        return decide(stats("c", candidate), stats("s", stable), self.policy, traffic=True)


def for_runtime(
    runtime: Any,
    *,
    suites_for: Callable[[str], Sequence[Suite]],
    schema_for: Callable[[str], dict[str, Any] | None],
) -> ReleaseHooks:
    """The hooks on a ``stratus.composition.Runtime``'s clients (one per service and process),
    with the stage's gate policy (``STRATUS_RELEASE_GATE``)."""
    from stratus.evals.metrics import CloudWatchSink

    clients = runtime.clients
    cloudwatch = clients.client("cloudwatch")
    return ReleaseHooks(
        codedeploy=clients.client("codedeploy"),
        lambda_client=clients.client("lambda"),
        cloudwatch=cloudwatch,
        policy=policy_from_env(),
        # PutMetricData, not EMF: the worker's hook reads the score right after.
        sink=CloudWatchSink(cloudwatch),
        suites_for=suites_for,
        schema_for=schema_for,
    )


__all__ = [
    "GATE_ENV",
    "PASS_RATE_METRIC",
    "HookEvent",
    "HookOutcome",
    "ReleaseHooks",
    "Target",
    "VersionInfo",
    "critical_cases",
    "for_runtime",
    "policy_from_env",
]

"""The CodeDeploy release hooks' decisions, on the sample lifecycle events in ``events/codedeploy``.

Real boto3 clients (CodeDeploy, Lambda, CloudWatch) with botocore's ``Stubber``: every
call the hook makes must be one the stub expects, with the parameters it checks, and
every outcome ends in ``PutLifecycleEventHookExecutionStatus`` with the right status.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from stratus.evals.metrics import EvalMetrics
from stratus.evals.models import Suite, parse_suite
from stratus.release_gate import GatePolicy
from stratus.release_hooks import ReleaseHooks, critical_cases, policy_from_env
from tests.support import load_event

PRE = load_event("codedeploy/pre_traffic.json")
POST = load_event("codedeploy/post_traffic.json")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FUNCTION = "Stratus-prod-FunctionsAgentOrderStatusFunction-AbC123"
WORKER = "Stratus-prod-FunctionsWorkerOrderStatusFunction-DeF456"
API_HANDLER = "functions.handlers.api.lambda_handler"
WORKER_HANDLER = "functions.handlers.worker.lambda_handler"
POLICY = GatePolicy(min_requests=20, max_cost_per_task_usd=0.05, min_eval_score=80)

SUITE = parse_suite(
    {
        "agent": "order_status",
        "cases": [
            {
                "id": "lookup-in-transit",
                "tags": ["critical"],
                "input": "Where is my order A-1001?",
                "assertions": [{"type": "text_contains", "text": "DHL"}],
            },
            {
                "id": "not-critical",
                "input": "hello",
                "assertions": [{"type": "text_contains", "text": "never checked"}],
            },
            {
                "id": "a-job",
                "tags": ["critical"],
                "kind": "job",
                "input": "x",
                "assertions": [{"type": "text_contains", "text": "x"}],
            },
        ],
    },
    "inline",
)


def _client(service: str) -> Any:
    return boto3.client(
        service,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class Stubs:
    codedeploy: Stubber
    lambda_: Stubber
    cloudwatch: Stubber
    published: list[EvalMetrics]
    hooks: ReleaseHooks

    def target(self, function: str = FUNCTION, current: str = "3", new: str = "4") -> None:
        deployment = PRE["DeploymentId"]
        self.codedeploy.add_response(
            "list_deployment_targets",
            {"targetIds": [f"{function}:live"]},
            {"deploymentId": deployment},
        )
        info = {
            "functionName": function,
            "functionAlias": "live",
            "currentVersion": current,
            "targetVersion": new,
            "targetVersionWeight": 0.0,
        }
        self.codedeploy.add_response(
            "get_deployment_target",
            {
                "deploymentTarget": {
                    "deploymentTargetType": "LambdaTarget",
                    "lambdaTarget": {"lambdaFunctionInfo": info},
                }
            },
            {"deploymentId": deployment, "targetId": f"{function}:live"},
        )

    def config(self, function: str, version: str, release: str, handler: str) -> None:
        self.lambda_.add_response(
            "get_function_configuration",
            {
                "FunctionName": function,
                "Version": version,
                "Handler": handler,
                "Environment": {
                    "Variables": {"STRATUS_AGENT": "order_status", "STRATUS_RELEASE": release}
                },
            },
            {"FunctionName": function, "Qualifier": version},
        )

    def eval_score(self, release: str, value: float | None) -> None:
        expected = {
            "MetricDataQueries": [
                {
                    "Id": "score",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "Stratus",
                            "MetricName": "EvalScore",
                            "Dimensions": [
                                {"Name": "agent", "Value": "order_status"},
                                {"Name": "release", "Value": release},
                            ],
                        },
                        "Period": 3600,
                        "Stat": "Minimum",
                    },
                    "ReturnData": True,
                }
            ],
            "StartTime": NOW - timedelta(days=14),
            "EndTime": NOW,
            "ScanBy": "TimestampDescending",
        }
        values = [] if value is None else [value]
        self.cloudwatch.add_response(
            "get_metric_data",
            {"MetricDataResults": [{"Id": "score", "Values": values, "Timestamps": []}]},
            expected,
        )

    def answer(self, version: str, text: str) -> None:
        body = {
            "output": text,
            "model": "gpt-5-mini",
            "agent": {"name": "order_status", "version": "1.0.0"},
            "cost_usd": "0.0004",
            "usage": {"input_tokens": 100, "output_tokens": 20},
            "tool_calls": [],
        }
        raw = json.dumps({"statusCode": 200, "body": json.dumps(body), "headers": {}}).encode()
        self.lambda_.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(raw), len(raw))},
            {
                "FunctionName": FUNCTION,
                "Qualifier": version,
                "InvocationType": "RequestResponse",
                "Payload": ANY,
            },
        )

    def status(self, event: dict[str, Any], status: str) -> None:
        self.codedeploy.add_response(
            "put_lifecycle_event_hook_execution_status",
            {"lifecycleEventHookExecutionId": event["LifecycleEventHookExecutionId"]},
            {
                "deploymentId": event["DeploymentId"],
                "lifecycleEventHookExecutionId": event["LifecycleEventHookExecutionId"],
                "status": status,
            },
        )

    def done(self) -> None:
        for stub in (self.codedeploy, self.lambda_, self.cloudwatch):
            stub.assert_no_pending_responses()


class ListSink:
    def __init__(self, into: list[EvalMetrics]) -> None:
        self._into = into

    def publish(self, metrics: Sequence[EvalMetrics]) -> None:
        self._into.extend(metrics)


@pytest.fixture
def stubs() -> Iterator[Stubs]:
    codedeploy, lambda_client, cloudwatch = (
        _client("codedeploy"),
        _client("lambda"),
        _client("cloudwatch"),
    )
    published: list[EvalMetrics] = []
    hooks = ReleaseHooks(
        codedeploy=codedeploy,
        lambda_client=lambda_client,
        cloudwatch=cloudwatch,
        policy=POLICY,
        sink=ListSink(published),
        suites_for=lambda agent: [SUITE] if agent == "order_status" else [],
        schema_for=lambda agent: None,
        now=lambda: NOW,
        concurrency=1,
    )
    stubbers = [Stubber(c) for c in (codedeploy, lambda_client, cloudwatch)]
    for stub in stubbers:
        stub.activate()
    yield Stubs(*stubbers, published=published, hooks=hooks)
    for stub in stubbers:
        stub.deactivate()


def test_the_sample_events_have_the_codedeploy_hook_shape() -> None:
    for event in (PRE, POST):
        assert set(event) == {"DeploymentId", "LifecycleEventHookExecutionId"}
        assert event["DeploymentId"].startswith("d-")
    assert PRE["LifecycleEventHookExecutionId"] != POST["LifecycleEventHookExecutionId"]


def test_only_critical_non_job_cases_gate_a_version() -> None:
    assert [p.case.id for p in critical_cases([SUITE])] == ["lookup-in-transit"]


def test_pre_traffic_runs_the_critical_cases_on_the_new_version_and_succeeds(
    stubs: Stubs,
) -> None:
    stubs.target()
    stubs.config(FUNCTION, "4", "r-new000000000", API_HANDLER)
    stubs.config(FUNCTION, "3", "r-old000000000", API_HANDLER)
    stubs.eval_score("r-old000000000", 90.0)
    stubs.answer("4", "Your order A-1001 is in transit with DHL.")
    stubs.status(PRE, "Succeeded")

    outcome = stubs.hooks.pre_traffic(PRE)

    stubs.done()
    assert outcome.status == "Succeeded", outcome.to_json()
    assert (outcome.agent, outcome.release) == ("order_status", "r-new000000000")
    assert stubs.published == [EvalMetrics("order_status", "r-new000000000", 100.0, 1.0)]
    assert outcome.decision is not None
    assert {c.name: c.status for c in outcome.decision.checks} == {
        "eval_score": "passed",
        "critical_cases": "passed",
    }


def test_pre_traffic_fails_the_deployment_when_a_critical_case_fails(stubs: Stubs) -> None:
    stubs.target()
    stubs.config(FUNCTION, "4", "r-new000000000", API_HANDLER)
    stubs.config(FUNCTION, "3", "r-old000000000", API_HANDLER)
    stubs.eval_score("r-old000000000", None)
    stubs.answer("4", "I cannot say where it is.")
    stubs.status(PRE, "Failed")

    outcome = stubs.hooks.pre_traffic(PRE)

    stubs.done()
    assert outcome.status == "Failed"
    assert stubs.published == [EvalMetrics("order_status", "r-new000000000", 0.0, 0.0)]
    assert outcome.decision is not None
    reasons = " ".join(outcome.decision.reasons)
    assert "eval_score" in reasons and "lookup-in-transit" in reasons


def test_a_worker_version_is_judged_on_its_releases_published_score(stubs: Stubs) -> None:
    stubs.target(WORKER)
    stubs.config(WORKER, "4", "r-new000000000", WORKER_HANDLER)
    stubs.config(WORKER, "3", "r-old000000000", WORKER_HANDLER)
    stubs.eval_score("r-old000000000", 95.0)
    stubs.eval_score("r-new000000000", 70.0)
    stubs.status(PRE, "Failed")

    outcome = stubs.hooks.pre_traffic(PRE)

    stubs.done()
    assert outcome.status == "Failed"
    assert stubs.published == []  # a worker runs no cases of its own
    assert outcome.decision is not None
    assert outcome.decision.reasons == ["eval_score: 70.00 (stable 95.00, at least 93.00)"]


def test_any_failure_is_reported_failed_never_left_hanging(stubs: Stubs) -> None:
    stubs.codedeploy.add_client_error(
        "list_deployment_targets", service_error_code="DeploymentDoesNotExistException"
    )
    stubs.status(PRE, "Failed")

    outcome = stubs.hooks.pre_traffic(PRE)

    stubs.done()
    assert outcome.status == "Failed"
    assert outcome.error is not None and "DeploymentDoesNotExist" in outcome.error


def test_a_version_without_a_release_fails_the_hook(stubs: Stubs) -> None:
    stubs.target()
    stubs.lambda_.add_response(
        "get_function_configuration",
        {"FunctionName": FUNCTION, "Handler": API_HANDLER, "Environment": {"Variables": {}}},
        {"FunctionName": FUNCTION, "Qualifier": "4"},
    )
    stubs.status(PRE, "Failed")

    outcome = stubs.hooks.pre_traffic(PRE)

    stubs.done()
    assert outcome.status == "Failed" and "STRATUS_RELEASE" in (outcome.error or "")


def test_an_event_that_is_not_a_lifecycle_event_is_refused_without_a_report(
    stubs: Stubs,
) -> None:
    outcome = stubs.hooks.pre_traffic({"Records": []})
    stubs.done()  # nothing was called: there is no execution id to report to
    assert outcome.status == "Failed" and (outcome.error or "").startswith("invalid_event")


def _post_metrics(stubs: Stubs, candidate: dict[str, float], stable: dict[str, float]) -> None:
    stubs.codedeploy.add_response(
        "get_deployment",
        {"deploymentInfo": {"createTime": NOW - timedelta(minutes=6, seconds=10)}},
        {"deploymentId": POST["DeploymentId"]},
    )
    results = []
    for key, figures in (("c", candidate), ("s", stable)):
        for name, value in figures.items():
            results.append({"Id": f"{key}_{name}", "Values": [value], "Timestamps": [NOW]})
    stubs.cloudwatch.add_response(
        "get_metric_data",
        {"MetricDataResults": results},
        {
            "MetricDataQueries": ANY,
            "StartTime": NOW - timedelta(minutes=7),
            "EndTime": NOW,
            "ScanBy": "TimestampDescending",
        },
    )


STABLE_FIGURES = {"inv": 400, "err": 2, "p90": 900.0, "cost": 400 * 2000, "tasks": 400}


def test_post_traffic_rolls_back_a_canary_that_costs_five_times_more(stubs: Stubs) -> None:
    stubs.target()
    stubs.config(FUNCTION, "4", "r-new000000000", API_HANDLER)
    stubs.config(FUNCTION, "3", "r-old000000000", API_HANDLER)
    costly = {"inv": 40, "err": 0, "p90": 950.0, "cost": 40 * 10_000, "tasks": 40}
    _post_metrics(stubs, costly, STABLE_FIGURES)
    stubs.eval_score("r-new000000000", 100.0)
    stubs.eval_score("r-old000000000", 100.0)
    stubs.status(POST, "Failed")

    outcome = stubs.hooks.post_traffic(POST)

    stubs.done()
    assert outcome.status == "Failed"
    assert outcome.decision is not None
    failed = [c for c in outcome.decision.checks if c.status == "failed"]
    assert [c.name for c in failed] == ["cost_per_task"]
    assert "$0.010000" in failed[0].detail and "$0.002000" in failed[0].detail


def test_post_traffic_promotes_a_canary_as_good_as_the_old_version(stubs: Stubs) -> None:
    stubs.target()
    stubs.config(FUNCTION, "4", "r-new000000000", API_HANDLER)
    stubs.config(FUNCTION, "3", "r-old000000000", API_HANDLER)
    good = {"inv": 40, "err": 0, "p90": 950.0, "cost": 40 * 2100, "tasks": 40}
    _post_metrics(stubs, good, STABLE_FIGURES)
    stubs.eval_score("r-new000000000", 100.0)
    stubs.eval_score("r-old000000000", 100.0)
    stubs.status(POST, "Succeeded")

    outcome = stubs.hooks.post_traffic(POST)

    stubs.done()
    assert outcome.status == "Succeeded", outcome.to_json()
    assert outcome.decision is not None
    names = {c.name: c.status for c in outcome.decision.checks}
    assert names == {
        "error_rate": "passed",
        "p90_latency": "passed",
        "cost_per_task": "passed",
        "eval_score": "passed",
    }


def test_post_traffic_rolls_back_a_canary_that_errs(stubs: Stubs) -> None:
    stubs.target()
    stubs.config(FUNCTION, "4", "r-new000000000", API_HANDLER)
    stubs.config(FUNCTION, "3", "r-old000000000", API_HANDLER)
    erring = {"inv": 40, "err": 8, "p90": 950.0, "cost": 40 * 2000, "tasks": 40}
    _post_metrics(stubs, erring, STABLE_FIGURES)
    stubs.eval_score("r-new000000000", 100.0)
    stubs.eval_score("r-old000000000", 100.0)
    stubs.status(POST, "Failed")

    outcome = stubs.hooks.post_traffic(POST)

    stubs.done()
    assert outcome.status == "Failed"
    assert outcome.decision is not None
    assert [c.name for c in outcome.decision.checks if c.status == "failed"] == ["error_rate"]


def test_the_gate_policy_comes_from_the_stage_environment() -> None:
    raw = GatePolicy(max_cost_per_task_usd=0.02, min_eval_score=95).model_dump_json()
    assert policy_from_env({"STRATUS_RELEASE_GATE": raw}).max_cost_per_task_usd == 0.02
    assert policy_from_env({}) == GatePolicy()


def test_the_bundled_suites_load_for_every_agent() -> None:
    from functions.agents import agent_names
    from functions.handlers.release_hooks import schema_for, suites_for

    for agent in agent_names():
        suites: Sequence[Suite] = suites_for(agent)
        assert suites and all(s.agent == agent for s in suites)
        schema_for(agent)  # loads the spec from the code asset
    assert critical_cases(suites_for("order_status"))


class _StubbedClients:
    """``AwsClients``' one method the hooks use, answering with the given clients."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self._clients = clients

    def client(self, service: str) -> Any:
        return self._clients[service]


def test_the_handlers_report_through_the_runtimes_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from functions.handlers import release_hooks as handler
    from stratus import composition
    from stratus.composition import Runtime
    from stratus.config import Settings
    from tests.support import FakeLambdaContext

    clients = {s: _client(s) for s in ("codedeploy", "lambda", "cloudwatch")}
    codedeploy = Stubber(clients["codedeploy"])
    for event in (PRE, POST):
        codedeploy.add_client_error(
            "list_deployment_targets", service_error_code="DeploymentDoesNotExistException"
        )
        codedeploy.add_response(
            "put_lifecycle_event_hook_execution_status",
            {},
            {
                "deploymentId": event["DeploymentId"],
                "lifecycleEventHookExecutionId": event["LifecycleEventHookExecutionId"],
                "status": "Failed",
            },
        )
    monkeypatch.setenv("STRATUS_RELEASE_GATE", POLICY.model_dump_json())
    composition.install(Runtime(Settings(), clients=_StubbedClients(clients)))  # type: ignore[arg-type]
    try:
        with codedeploy:
            pre = handler.pre_traffic(dict(PRE), FakeLambdaContext())  # type: ignore[arg-type]
            post = handler.post_traffic(dict(POST), FakeLambdaContext())  # type: ignore[arg-type]
            codedeploy.assert_no_pending_responses()
    finally:
        composition.reset()
    assert (pre["hook"], pre["status"]) == ("pre_traffic", "Failed")
    assert (post["hook"], post["status"]) == ("post_traffic", "Failed")
    assert "DeploymentDoesNotExist" in pre["error"]

"""Releases in the synthesized template, for every agent and both stages.

Per agent, its API function and its job worker each have: a published version whose
description names the release (``STRATUS_RELEASE``), a ``live`` alias on it that every
integration calls (API methods, event source mappings, state machine tasks), a CodeDeploy
deployment group with the stage's traffic shift, automatic rollback, the four alarms
(errors, p90 latency, cost per task, eval score) on the new version and both hooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.agents import load_all
from infra.config import load_stage
from infra.topology import agent_plan, plan_settings
from stratus.releases import release_of
from tests.infra.conftest import STAGES, Synthesized

PRE_HANDLER = "functions.handlers.release_hooks.pre_traffic"
POST_HANDLER = "functions.handlers.release_hooks.post_traffic"
DEPLOYMENT_CONFIG = {
    "dev": "CodeDeployDefault.LambdaAllAtOnce",
    "prod": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
}


def _of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


def _refs(value: Any) -> set[str]:
    """Every logical id ``value`` refers to (Ref and Fn::GetAtt), anywhere inside it."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for item in value.values():
            found |= _refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= _refs(item)
    return found


class Released:
    """The release resources of one stage's template, by (agent, handler kind)."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.functions = _of_type(template, "AWS::Lambda::Function")
        self.versions = _of_type(template, "AWS::Lambda::Version")
        self.aliases = _of_type(template, "AWS::Lambda::Alias")
        self.groups = _of_type(template, "AWS::CodeDeploy::DeploymentGroup")
        self.alarms = _of_type(template, "AWS::CloudWatch::Alarm")

    def function(self, agent: str, handler_module: str) -> str:
        (logical,) = [
            k
            for k, r in self.functions.items()
            if r["Properties"]["Handler"].startswith(f"functions.handlers.{handler_module}.")
            and r["Properties"]["Environment"]["Variables"].get("STRATUS_AGENT") == agent
        ]
        return logical

    def hook(self, handler: str) -> str:
        (logical,) = [k for k, r in self.functions.items() if r["Properties"]["Handler"] == handler]
        return logical

    def alias_of(self, function: str) -> str:
        (logical,) = [
            k
            for k, r in self.aliases.items()
            if r["Properties"]["FunctionName"] == {"Ref": function}
        ]
        return logical


@pytest.fixture(scope="module", params=STAGES)
def stage_released(
    request: pytest.FixtureRequest, synthesized: Synthesized
) -> tuple[str, Released]:
    return request.param, Released(synthesized.templates[request.param])


AGENTS = sorted(load_all())


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("module", ["api", "worker"])
def test_every_agent_function_releases_through_a_gated_live_alias(
    stage_released: tuple[str, Released], agent: str, module: str
) -> None:
    stage_name, released = stage_released
    stage = load_stage(stage_name)
    function = released.function(agent, module)
    props = released.functions[function]["Properties"]
    release = props["Environment"]["Variables"]["STRATUS_RELEASE"]
    # The release is the agent's content hash under the settings its function reads.
    plan = agent_plan(load_all()[agent], stage)
    assert release == release_of(load_all()[agent], plan_settings(plan.static_env))

    alias_id = released.alias_of(function)
    alias = released.aliases[alias_id]
    assert alias["Properties"]["Name"] == "live"
    (version_id,) = _refs(alias["Properties"]["FunctionVersion"])
    version = released.versions[version_id]["Properties"]
    assert version["FunctionName"] == {"Ref": function}
    assert release in version["Description"]

    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == {"Ref": released.hook(PRE_HANDLER)}
    assert update["AfterAllowTrafficHook"] == {"Ref": released.hook(POST_HANDLER)}
    group = released.groups[update["DeploymentGroupName"]["Ref"]]["Properties"]
    assert group["DeploymentConfigName"] == DEPLOYMENT_CONFIG[stage_name]
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"} <= set(
        group["AutoRollbackConfiguration"]["Events"]
    )
    assert group["AlarmConfiguration"]["Enabled"] is True
    alarms = [
        released.alarms[a["Name"]["Ref"]]["Properties"]
        for a in group["AlarmConfiguration"]["Alarms"]
    ]
    _assert_the_four_alarms(alarms, agent, release, function, version_id, stage)

    if module == "api":
        assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}


def _metric_names(alarm: dict[str, Any]) -> set[str]:
    if "MetricName" in alarm:
        return {alarm["MetricName"]}
    return {
        m["MetricStat"]["Metric"]["MetricName"]
        for m in alarm.get("Metrics", [])
        if "MetricStat" in m
    }


def _dims(alarm: dict[str, Any]) -> list[list[dict[str, Any]]]:
    if "Dimensions" in alarm:
        return [alarm["Dimensions"]]
    return [m["MetricStat"]["Metric"]["Dimensions"] for m in alarm["Metrics"] if "MetricStat" in m]


def _assert_the_four_alarms(
    alarms: list[dict[str, Any]],
    agent: str,
    release: str,
    function: str,
    version_id: str,
    stage: Any,
) -> None:
    by_metrics = {frozenset(_metric_names(a)): a for a in alarms}
    assert set(by_metrics) == {
        frozenset({"Errors", "Invocations"}),
        frozenset({"Duration"}),
        frozenset({"CostMicroUSD", "Tasks"}),
        frozenset({"EvalScore"}),
    }
    new_version = {
        "Name": "Resource",
        "Value": {"Fn::Join": [":", [{"Ref": function}, {"Fn::GetAtt": [version_id, "Version"]}]]},
    }
    errors = by_metrics[frozenset({"Errors", "Invocations"})]
    latency = by_metrics[frozenset({"Duration"})]
    for alarm in (errors, latency):  # the NEW version's metrics, not the function's
        for dims in _dims(alarm):
            assert {"Name": "FunctionName", "Value": {"Ref": function}} in dims
            assert new_version in dims
    assert errors["Threshold"] == stage.release_gate.max_error_rate
    assert "errors / invocations" in json.dumps(errors["Metrics"])
    assert latency["ExtendedStatistic"] == "p90"
    release_dims = [{"Name": "agent", "Value": agent}, {"Name": "release", "Value": release}]
    cost = by_metrics[frozenset({"CostMicroUSD", "Tasks"})]
    assert all(d == release_dims for d in _dims(cost))
    assert "cost / tasks / 1000000" in json.dumps(cost["Metrics"])
    assert cost["Threshold"] == stage.release_gate.max_cost_per_task_usd
    assert cost["ComparisonOperator"] == "GreaterThanThreshold"
    evals = by_metrics[frozenset({"EvalScore"})]
    assert _dims(evals) == [release_dims]
    assert evals["Threshold"] == stage.release_gate.min_eval_score
    assert evals["ComparisonOperator"] == "LessThanThreshold"


def test_api_methods_of_agents_call_the_live_alias(stage_released: tuple[str, Released]) -> None:
    _, released = stage_released
    agents = {released.function(a, "api") for a in AGENTS}
    aliases = {released.alias_of(f) for f in agents}
    methods = _of_type(released.template, "AWS::ApiGateway::Method")
    called = [
        _refs(m["Properties"]["Integration"]["Uri"])
        for m in methods.values()
        if m["Properties"].get("Integration", {}).get("Type") == "AWS_PROXY"
    ]
    agent_routes = [refs for refs in called if refs & (agents | aliases)]
    assert agent_routes, "no method calls an agent function"
    for refs in agent_routes:
        assert refs & aliases and not refs & agents  # the alias, never $LATEST
    assert aliases == set().union(*agent_routes) & aliases  # every agent is routed


def test_worker_queues_and_workflow_tasks_call_the_live_alias(
    stage_released: tuple[str, Released],
) -> None:
    _, released = stage_released
    workers = {released.function(a, "worker") for a in AGENTS}
    aliases = {released.alias_of(f) for f in workers}
    mappings = _of_type(released.template, "AWS::Lambda::EventSourceMapping")
    consumers = [m["Properties"]["FunctionName"] for m in mappings.values()]
    # CDK names an alias by its qualified name: <function name>:live.
    on_alias = [c for c in consumers if _refs(c) & aliases]
    assert {next(iter(_refs(c))) for c in on_alias} == aliases  # one per agent queue
    assert all(json.dumps(c).endswith('":live"]]}') for c in on_alias)
    assert not any(_refs(c) & workers for c in consumers)
    machines = _of_type(released.template, "AWS::StepFunctions::StateMachine")
    assert machines
    for machine in machines.values():
        refs = _refs(machine["Properties"]["DefinitionSubstitutions"])
        assert refs and refs <= aliases


def test_the_hooks_may_invoke_agent_versions_and_report_only_to_their_groups(
    stage_released: tuple[str, Released],
) -> None:
    _, released = stage_released
    released_functions = {released.function(a, m) for a in AGENTS for m in ("api", "worker")}
    policies = _of_type(released.template, "AWS::IAM::Policy")
    for handler in (PRE_HANDLER, POST_HANDLER):
        hook = released.functions[released.hook(handler)]["Properties"]
        role = hook["Role"]["Fn::GetAtt"][0]
        statements = [
            s
            for p in policies.values()
            if {"Ref": role} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        by_action: dict[str, list[Any]] = {}
        for statement in statements:
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                resources = statement["Resource"]
                by_action.setdefault(action, []).extend(
                    resources if isinstance(resources, list) else [resources]
                )
        invoked = by_action["lambda:InvokeFunction"]
        assert {next(iter(_refs(r))) for r in invoked} == released_functions
        assert all(":*" in json.dumps(r) for r in invoked)  # versions only, not $LATEST
        put = by_action["codedeploy:PutLifecycleEventHookExecutionStatus"]
        assert put and all(r != "*" for r in put)
        assert "cloudwatch:GetMetricData" in by_action
        assert "STRATUS_RELEASE_GATE" in hook["Environment"]["Variables"]


def test_the_code_asset_carries_the_eval_suites(synthesized: Synthesized, tmp_path: Any) -> None:
    """The pre-traffic hook reads ``agents/<name>/evals/*.json`` from its own code asset:
    the asset is the ``functions`` folder, and its bundling keeps the suites."""
    from aws_cdk import DockerImage

    from infra.constructs.bundling import CopyBundler
    from infra.paths import FUNCTIONS_DIR

    template = synthesized.templates["dev"]
    hook = Released(template).hook(PRE_HANDLER)
    key = template["Resources"][hook]["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    assets = json.loads((synthesized.outdir / "Stratus-dev.assets.json").read_text())
    assert Path(assets["files"][key]["source"]["path"]) == FUNCTIONS_DIR
    suites = sorted(
        p.relative_to(FUNCTIONS_DIR) for p in FUNCTIONS_DIR.glob("agents/*/evals/*.json")
    )
    assert {s.parts[1] for s in suites} == set(AGENTS)
    CopyBundler(FUNCTIONS_DIR).try_bundle(str(tmp_path), image=DockerImage.from_registry("x"))
    for suite in suites:
        assert (tmp_path / "functions" / suite).is_file(), suite


def test_a_release_id_is_what_the_function_itself_computes_whatever_the_shell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Synth hashes the plan's settings only; the function, reading exactly that
    environment, computes the same id (and the worker serves the same release)."""
    import os

    from infra.topology import worker_plan
    from stratus.config import Settings

    stage, spec = load_stage("prod"), load_all()["order_status"]
    clean = agent_plan(spec, stage).static_env["STRATUS_RELEASE"]
    monkeypatch.setenv("STRATUS_TIER_FAST", "some-other-model")
    monkeypatch.setenv("STRATUS_BUDGET_TASK_USD", "9")
    assert agent_plan(spec, stage).static_env["STRATUS_RELEASE"] == clean
    assert worker_plan(spec, stage).static_env["STRATUS_RELEASE"] == clean
    for name in [n for n in os.environ if n.startswith("STRATUS_")]:
        monkeypatch.delenv(name)
    for name, value in agent_plan(spec, stage).static_env.items():
        monkeypatch.setenv(name, value)
    assert release_of(spec, Settings()) == clean
    # Another tier model is another release.
    other = stage.model_copy(update={"tier_fast": "gpt-5-nano"})
    assert agent_plan(spec, other).static_env["STRATUS_RELEASE"] != clean

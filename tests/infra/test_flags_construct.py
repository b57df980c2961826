"""Feature flags in the template (issue 19): the AppConfig application, environment,
freeform profile with its JSON schema validator, the stage's deployment strategy, the
default document deployed, and reads granted on exactly that profile to the functions
that serve agents and the platform's jobs API (their plans carry ``STRATUS_FLAGS_*``).
Uses the session's synthesis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.topology.flags import (
    FLAGS_ENV_NAMES,
    READ_ACTIONS,
    default_document,
    schema,
)
from tests.infra.conftest import Synthesized


def _one(synthesized: Synthesized, stage: str, type_: str) -> tuple[str, dict[str, Any]]:
    found = synthesized.resources(stage, type_)
    assert len(found) == 1, (type_, sorted(found))
    return next(iter(found.items()))


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_application_environment_profile_and_first_version(
    synthesized: Synthesized, stage: str
) -> None:
    app_id, app = _one(synthesized, stage, "AWS::AppConfig::Application")
    assert app["Properties"]["Name"] == f"stratus-{stage}"
    env_id, env = _one(synthesized, stage, "AWS::AppConfig::Environment")
    assert env["Properties"]["Name"] == stage
    assert env["Properties"]["ApplicationId"] == {"Ref": app_id}
    profile_id, profile = _one(synthesized, stage, "AWS::AppConfig::ConfigurationProfile")
    props = profile["Properties"]
    assert (props["Name"], props["LocationUri"], props["Type"]) == (
        "flags",
        "hosted",
        "AWS.Freeform",
    )
    (validator,) = props["Validators"]
    assert validator["Type"] == "JSON_SCHEMA"
    assert json.loads(validator["Content"]) == schema()

    version_id, version = _one(synthesized, stage, "AWS::AppConfig::HostedConfigurationVersion")
    assert version["Properties"]["ContentType"] == "application/json"
    assert json.loads(version["Properties"]["Content"]) == default_document()
    _, deployment = _one(synthesized, stage, "AWS::AppConfig::Deployment")
    dp = deployment["Properties"]
    assert dp["EnvironmentId"] == {"Ref": env_id}
    assert dp["ConfigurationProfileId"] == {"Ref": profile_id}
    assert dp["ConfigurationVersion"] == {"Ref": version_id}
    strategy_id, _ = _one(synthesized, stage, "AWS::AppConfig::DeploymentStrategy")
    assert dp["DeploymentStrategyId"] == {"Ref": strategy_id}
    outputs = synthesized.templates[stage]["Outputs"]
    assert outputs["FlagsApplication"]["Value"] == {"Ref": app_id}
    assert outputs["FlagsDeploymentStrategyId"]["Value"] == {"Ref": strategy_id}


def test_strategy_follows_the_stage(synthesized: Synthesized) -> None:
    _, dev = _one(synthesized, "dev", "AWS::AppConfig::DeploymentStrategy")
    _, prod = _one(synthesized, "prod", "AWS::AppConfig::DeploymentStrategy")
    assert dev["Properties"]["DeploymentDurationInMinutes"] == 0
    assert dev["Properties"]["GrowthFactor"] == 100
    assert prod["Properties"]["GrowthType"] == "LINEAR"
    assert prod["Properties"]["GrowthFactor"] == 20
    assert prod["Properties"]["DeploymentDurationInMinutes"] == 5
    assert prod["Properties"]["FinalBakeTimeInMinutes"] == 10


def _statements(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    found = []
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        if {"Ref": role_id} not in resource["Properties"]["Roles"]:
            continue
        found += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def test_reads_granted_on_the_profile_to_the_flag_readers_only(synthesized: Synthesized) -> None:
    stack = synthesized.stacks["dev"]
    template = synthesized.templates["dev"]
    app_id = stack.get_logical_id(stack.flags.application)
    env_id = stack.get_logical_id(stack.flags.environment)
    profile_id = stack.get_logical_id(stack.flags.profile)
    readers = set(stack.flags.granted)
    # The agents' API functions (REST and streamed requests) and job workers, and the
    # platform function (POST /v1/jobs refuses a disabled agent).
    assert readers == {f"agent:{a}" for a in stack.agent_specs} | {
        f"worker:{a}" for a in stack.agent_specs
    } | {"platform"}
    functions = {**stack.functions.by_key, "stream": stack.websocket.router}
    for key, fn in functions.items():
        cfn_role = fn.role.node.default_child
        statements = _statements(template, stack.get_logical_id(cfn_role))
        flags = [s for s in statements if set(_list(s["Action"])) & set(READ_ACTIONS)]
        env_vars = set(
            template["Resources"][stack.get_logical_id(fn.function.node.default_child)][
                "Properties"
            ]
            .get("Environment", {})
            .get("Variables", {})
        )
        if key not in readers:
            assert not flags, key
            assert not set(FLAGS_ENV_NAMES) & env_vars, key
            continue
        assert set(FLAGS_ENV_NAMES) <= env_vars, key
        (statement,) = flags
        assert sorted(_list(statement["Action"])) == sorted(READ_ACTIONS)
        (resource,) = _list(statement["Resource"])
        rendered = json.dumps(resource)
        for logical_id in (app_id, env_id, profile_id):
            assert json.dumps({"Ref": logical_id}) in rendered, (key, rendered)
        assert "*" not in rendered


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_flags_resources_pass_cdk_nag(synthesized: Synthesized) -> None:
    """cdk-nag's packs have no AppConfig rules (no rows for them at all); the grants land
    in the function roles' policies, which ``test_nag`` checks with everything else."""
    for stage in ("dev", "prod"):
        rows = [row for row in synthesized.nag_report(stage) if "/Flags/" in row["Resource ID"]]
        assert all(row["Compliance"] in ("Compliant", "Suppressed") for row in rows), rows

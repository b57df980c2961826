"""The stage's ``otlp`` (issue 16): OpenTelemetry export of the agents' model and tool spans.

Off by default (no variable anywhere); set, only the agent functions and their workers get
``STRATUS_OTLP_ENDPOINT`` (and ``STRATUS_OTLP_HEADERS_SECRET``, with read access to that
secret), and the release they serve does not change (telemetry is not behaviour).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.agents import load_all
from infra.config import OtlpSettings, StageConfigError, cdk_json_context, load_stage, parse_stage
from infra.topology import RELEASE_ENV, function_plans
from infra.topology.otel import OTLP_ENDPOINT_ENV, OTLP_HEADERS_SECRET_ENV
from tests.infra.conftest import synth_context

pytestmark = pytest.mark.infra

ENDPOINT = "https://otlp.example.com/api/public/otel"


def _plans(otlp: OtlpSettings | None) -> dict[str, Any]:
    stage = load_stage("dev").model_copy(update={"otlp": otlp})
    return {plan.key: plan for plan in function_plans(stage, load_all())}


def test_off_by_default_no_function_gets_the_variables() -> None:
    for stage in ("dev", "prod"):
        assert load_stage(stage).otlp is None
    for plan in _plans(None).values():
        assert OTLP_ENDPOINT_ENV not in plan.static_env, plan.key
        assert OTLP_HEADERS_SECRET_ENV not in plan.static_env, plan.key


def test_set_only_agent_functions_and_workers_export_and_releases_stay() -> None:
    before = _plans(None)
    after = _plans(OtlpSettings(endpoint=ENDPOINT, headers_secret="stratus/dev/langfuse"))
    exporting = {key for key, plan in after.items() if OTLP_ENDPOINT_ENV in plan.static_env}
    agents = sorted(load_all())
    assert exporting == {f"agent:{a}" for a in agents} | {
        key for key in after if key.startswith("worker") and any(a in key for a in agents)
    }
    assert len(exporting) == 2 * len(agents)
    for key in exporting:
        env = after[key].static_env
        assert env[OTLP_ENDPOINT_ENV] == ENDPOINT
        assert env[OTLP_HEADERS_SECRET_ENV] == "stratus/dev/langfuse"
        assert env.get(RELEASE_ENV) == before[key].static_env.get(RELEASE_ENV)
    plain = _plans(OtlpSettings(endpoint=ENDPOINT))
    assert all(OTLP_HEADERS_SECRET_ENV not in p.static_env for p in plain.values())


@pytest.mark.parametrize(
    "otlp",
    [
        {"endpoint": "ftp://otlp.example.com"},
        {"endpoint": "otlp.example.com:4318"},
        {"endpoint": ENDPOINT, "headers_secret": "has spaces"},
        {"endpoint": ENDPOINT, "token": "inline secrets are refused"},
        {},
    ],
)
def test_a_bad_otlp_entry_is_a_clear_stage_error(otlp: dict[str, Any]) -> None:
    stages = cdk_json_context()["stratus:stages"]
    with pytest.raises(StageConfigError, match="otlp"):
        parse_stage("dev", {**stages, "dev": {**stages["dev"], "otlp": otlp}})


def test_the_template_grants_the_headers_secret_to_the_exporting_functions() -> None:
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from infra.stack import StratusStack, stack_name

    stage = load_stage("dev").model_copy(
        update={"otlp": OtlpSettings(endpoint=ENDPOINT, headers_secret="stratus/dev/langfuse")}
    )
    app = App(context=synth_context())
    stack = StratusStack(app, stack_name(stage), stage=stage)
    template = Template.from_stack(stack)
    functions = template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Environment": {"Variables": {OTLP_ENDPOINT_ENV: ENDPOINT}}}},
    )
    assert len(functions) == 2 * len(load_all())
    granted = [
        policy
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if "secret:stratus/dev/langfuse-??????" in json.dumps(policy)
    ]
    # Each exporting function's role may read the secret (GetSecretValue), no other role.
    assert len(granted) == len(functions)
    assert all("secretsmanager:GetSecretValue" in json.dumps(p) for p in granted)
    # (issue 16, same template) API Gateway's own answers echo the caller's correlation id.
    responses = template.find_resources("AWS::ApiGateway::GatewayResponse")
    assert responses
    for response in responses.values():
        params = response["Properties"]["ResponseParameters"]
        assert params["gatewayresponse.header.X-Correlation-Id"] == (
            "method.request.header.X-Correlation-Id"
        )

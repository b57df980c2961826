"""The WebSocket API (issue 17) in the synthesized template: API, ``$connect`` authorizer,
routes on one router, throttled and access-logged stage, and ``ManageConnections`` only
on this API's ``@connections`` (cdk-nag and cfn-lint run over the same templates in
``test_nag.py`` / ``test_cfn_lint.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import load_stage
from infra.topology.streaming import (
    STREAM_AUTHORIZER_HANDLER,
    STREAM_FUNCTIONS_ENV,
    STREAM_HANDLER,
    WEBSOCKET_ROUTES,
    WS_CALLBACK_ENV,
)
from tests.infra.conftest import STAGES, Synthesized

pytestmark = pytest.mark.infra


def _one(synthesized: Synthesized, stage: str, type_: str) -> tuple[str, dict[str, Any]]:
    (found,) = synthesized.resources(stage, type_).items()
    return found


def _function(synthesized: Synthesized, stage: str, handler: str) -> tuple[str, dict[str, Any]]:
    functions = synthesized.resources(stage, "AWS::Lambda::Function")
    (found,) = [(k, f) for k, f in functions.items() if f["Properties"]["Handler"] == handler]
    return found


def _refs(value: Any) -> set[str]:
    """Every logical id a CloudFormation value refers to (Ref, GetAtt)."""
    text = json.dumps(value)
    found = set()
    for marker in ('"Ref": "', '"Fn::GetAtt": ["'):
        for part in text.split(marker)[1:]:
            found.add(part.split('"', 1)[0])
    return {ref for ref in found if not ref.startswith("AWS::")}  # pseudo parameters


@pytest.mark.parametrize("stage", STAGES)
def test_websocket_api_routes_and_authorizer(synthesized: Synthesized, stage: str) -> None:
    api_id, api = _one(synthesized, stage, "AWS::ApiGatewayV2::Api")
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    assert api["Properties"]["RouteSelectionExpression"] == "$request.body.action"

    router_id, _ = _function(synthesized, stage, STREAM_HANDLER)
    authorizer_fn_id, _ = _function(synthesized, stage, STREAM_AUTHORIZER_HANDLER)
    integrations = synthesized.resources(stage, "AWS::ApiGatewayV2::Integration")
    # ONE router function behind every route.
    assert {
        ref for i in integrations.values() for ref in _refs(i["Properties"]["IntegrationUri"])
    } == {router_id}
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in synthesized.resources(stage, "AWS::ApiGatewayV2::Route").values()
    }
    assert (
        set(routes)
        == set(WEBSOCKET_ROUTES)
        == {
            "$connect",
            "$disconnect",
            "$default",
            "invoke",
            "message",
        }
    )
    for props in routes.values():
        assert _refs(props["Target"]) <= set(integrations)

    authorizer_id, authorizer = _one(synthesized, stage, "AWS::ApiGatewayV2::Authorizer")
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "REQUEST"
    # No identity sources: a header OR ?ticket= (with sources, API Gateway needs all).
    assert "IdentitySource" not in props
    assert _refs(props["AuthorizerUri"]) == {authorizer_fn_id}
    connect = routes["$connect"]
    assert connect["AuthorizationType"] == "CUSTOM"
    assert connect["AuthorizerId"] == {"Ref": authorizer_id}
    for key, route in routes.items():
        if key != "$connect":
            assert route["AuthorizationType"] == "NONE" and "AuthorizerId" not in route

    # API Gateway may invoke the two functions for this API only.
    for permission in synthesized.resources(stage, "AWS::Lambda::Permission").values():
        target = _refs(permission["Properties"]["FunctionName"])
        if target & {router_id, authorizer_fn_id}:
            assert api_id in _refs(permission["Properties"]["SourceArn"])


@pytest.mark.parametrize("stage", STAGES)
def test_stage_is_throttled_logged_and_output(synthesized: Synthesized, stage: str) -> None:
    config = load_stage(stage)
    api_id, _ = _one(synthesized, stage, "AWS::ApiGatewayV2::Api")
    _, ws_stage = _one(synthesized, stage, "AWS::ApiGatewayV2::Stage")
    props = ws_stage["Properties"]
    assert props["StageName"] == stage and props["AutoDeploy"] is True
    route_settings = props["DefaultRouteSettings"]
    # Throttled like the REST stage; execution logs never carry bodies.
    assert route_settings["ThrottlingRateLimit"] == config.api_throttle_rate
    assert route_settings["ThrottlingBurstLimit"] == config.api_throttle_burst
    assert route_settings["DataTraceEnabled"] is False
    assert route_settings["LoggingLevel"] == "INFO"
    (log_group,) = _refs(props["AccessLogSettings"]["DestinationArn"])
    group = synthesized.templates[stage]["Resources"][log_group]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == config.log_retention_days
    fields = json.loads(props["AccessLogSettings"]["Format"])
    assert fields["connectionId"] == "$context.connectionId"
    assert fields["routeKey"] == "$context.routeKey"
    assert fields["tenantId"] == "$context.authorizer.tenant_id"

    output = synthesized.templates[stage]["Outputs"]["WebSocketUrl"]["Value"]
    assert json.dumps(output).startswith('{"Fn::Join": ["", ["wss://", {"Ref": "' + api_id)


def _manage_connections(synthesized: Synthesized, stage: str) -> dict[str, list[str]]:
    """Role logical id -> the resources of its execute-api statements (all of them)."""
    found: dict[str, list[str]] = {}
    for policy in synthesized.resources(stage, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            actions = actions if isinstance(actions, list) else [actions]
            if not any(a.startswith("execute-api:") or a == "*" for a in actions):
                continue
            assert actions == ["execute-api:ManageConnections"], statement
            resources = statement["Resource"]
            for role in _refs(policy["Properties"]["Roles"]):
                found.setdefault(role, []).extend(
                    json.dumps(r)
                    for r in (resources if isinstance(resources, list) else [resources])
                )
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_manage_connections_only_on_this_api(synthesized: Synthesized, stage: str) -> None:
    api_id, _ = _one(synthesized, stage, "AWS::ApiGatewayV2::Api")
    granted = _manage_connections(synthesized, stage)
    functions = synthesized.resources(stage, "AWS::Lambda::Function")
    by_role = {}
    for fn in functions.values():
        variables = fn["Properties"]["Environment"]["Variables"]
        (role,) = _refs(fn["Properties"]["Role"])
        by_role[role] = (fn["Properties"]["Handler"], variables.get("STRATUS_AGENT", ""))
    agents = {
        agent
        for handler, agent in by_role.values()
        if handler == "functions.handlers.api.lambda_handler" and agent
    }
    assert agents
    # The router and every agent's API function; no worker, platform or authorizer.
    assert {by_role[role] for role in granted} == {(STREAM_HANDLER, "")} | {
        ("functions.handlers.api.lambda_handler", agent) for agent in agents
    }
    stage_arn = (
        '{"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":execute-api:", '
        '{"Ref": "AWS::Region"}, ":", {"Ref": "AWS::AccountId"}, ":", '
        f'{{"Ref": "{api_id}"}}, "/{stage}/'
    )
    for role, resources in granted.items():
        handler, _ = by_role[role]
        verbs = ("POST", "GET", "DELETE") if handler == STREAM_HANDLER else ("POST",)
        assert sorted(resources) == sorted(
            f'{stage_arn}{verb}/@connections/*"]]}}' for verb in verbs
        ), role


@pytest.mark.parametrize("stage", STAGES)
def test_streaming_environment(synthesized: Synthesized, stage: str) -> None:
    api_id, _ = _one(synthesized, stage, "AWS::ApiGatewayV2::Api")
    _, router = _function(synthesized, stage, STREAM_HANDLER)
    env = router["Properties"]["Environment"]["Variables"]
    assert json.dumps(env[WS_CALLBACK_ENV]).startswith(
        '{"Fn::Join": ["", ["https://", {"Ref": "' + api_id
    )
    assert json.dumps(env[WS_CALLBACK_ENV]).endswith(f'"/{stage}"]]}}')
    # {agent: its live alias}: the router invokes what the REST routes invoke.
    aliases = synthesized.resources(stage, "AWS::Lambda::Alias")
    targets = _refs(env[STREAM_FUNCTIONS_ENV])
    assert targets and targets <= set(aliases)
    assert {aliases[t]["Properties"]["Name"] for t in targets} == {"live"}
    assert "STRATUS_STREAMS_TABLE" in env
    functions = synthesized.resources(stage, "AWS::Lambda::Function")
    for fn in functions.values():
        variables = fn["Properties"]["Environment"]["Variables"]
        agent_api = (
            fn["Properties"]["Handler"] == "functions.handlers.api.lambda_handler"
            and variables["STRATUS_AGENT"]
        )
        if agent_api:
            assert variables[WS_CALLBACK_ENV] == env[WS_CALLBACK_ENV]
            assert "STRATUS_STREAMS_TABLE" in variables
        elif fn["Properties"]["Handler"] != STREAM_HANDLER:
            assert WS_CALLBACK_ENV not in variables
    _, authorizer = _function(synthesized, stage, STREAM_AUTHORIZER_HANDLER)
    auth_env = authorizer["Properties"]["Environment"]["Variables"]
    assert {"STRATUS_TENANTS_TABLE", "STRATUS_STREAMS_TABLE"} <= set(auth_env)


def test_local_websocket_routes_match_the_template(synthesized: Synthesized) -> None:
    """The local cloud's WebSocket API serves exactly the deployed routes and selection."""
    from infra.local.websocket_gateway import LocalWebSocketGateway, select_route
    from infra.topology.streaming import ROUTE_SELECTION_EXPRESSION

    _, api = _one(synthesized, "dev", "AWS::ApiGatewayV2::Api")
    assert api["Properties"]["RouteSelectionExpression"] == ROUTE_SELECTION_EXPRESSION
    deployed = {
        r["Properties"]["RouteKey"]
        for r in synthesized.resources("dev", "AWS::ApiGatewayV2::Route").values()
    }
    # As the local cloud builds it (infra.local.cloud: the default routes), never started.
    local = LocalWebSocketGateway(lambda *a: None, router="r", authorizer="a")  # type: ignore[arg-type]
    try:
        assert set(local.routes) == deployed
    finally:
        local.stop()
    for route in deployed - {"$connect", "$disconnect", "$default"}:
        assert select_route(json.dumps({"action": route})) == route

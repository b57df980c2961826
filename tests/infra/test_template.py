"""What the synthesized template must contain: functions, tables, API, IAM, outputs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.agents import load_all
from infra.config import load_stage
from infra.definitions import TABLES
from infra.topology import (
    API_HANDLER,
    AUTHORIZER_HANDLER,
    agent_plan,
    api_routes,
    authorizer_plan,
    platform_plan,
)
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.infra

AGENT_ENV = {
    "STRATUS_STAGE",
    "STRATUS_AGENT",
    "STRATUS_IDEMPOTENCY_TABLE",
    "STRATUS_MODEL_SECRET_NAME",
    "STRATUS_TIER_FAST",
    "STRATUS_TIER_SMART",
    "STRATUS_MAX_BODY_BYTES",
    "STRATUS_IDEMPOTENCY_TTL_S",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}


#: CloudWatch Logs delivery of a state machine: these actions take no resource ARN.
#: The release hooks read metrics (GetMetricData has no resource-level permissions).
HOOK_METRIC_READS = {"cloudwatch:GetMetricData"}


def _namespaced_metric_writes(statement: dict[str, Any]) -> bool:
    """PutMetricData on '*' (it has no resource level), held to the Stratus namespace."""
    return _as_list(statement["Action"]) == ["cloudwatch:PutMetricData"] and statement.get(
        "Condition"
    ) == {"StringEquals": {"cloudwatch:namespace": "Stratus"}}


STATES_LOG_DELIVERY = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def _functions(synthesized: Synthesized, stage: str = "dev") -> dict[str, dict[str, Any]]:
    return synthesized.resources(stage, "AWS::Lambda::Function")


def _function_for(synthesized: Synthesized, agent: str) -> tuple[str, dict[str, Any]]:
    matches = [
        (logical_id, fn)
        for logical_id, fn in _functions(synthesized).items()
        if fn["Properties"]["Environment"]["Variables"].get("STRATUS_AGENT") == agent
        and fn["Properties"]["Handler"] == API_HANDLER
    ]
    assert len(matches) == 1, f"expected one function serving {agent!r}, got {len(matches)}"
    return matches[0]


def _ref(value: Any) -> str:
    """The logical id behind a Ref or Fn::GetAtt."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


# --- functions -----------------------------------------------------------------------


def test_one_function_per_agent_plus_platform_and_authorizer(synthesized: Synthesized) -> None:
    specs = load_all()
    # platform, authorizer, ingest, sweeper, callbacks; an API function and a worker per
    # agent; the release's pre- and post-traffic hooks; the stream router and its authorizer
    assert len(_functions(synthesized)) == 2 * len(specs) + 9


@pytest.mark.parametrize("agent", sorted(load_all()))
def test_agent_function(synthesized: Synthesized, dev_template: Any, agent: str) -> None:
    from aws_cdk.assertions import Match

    spec = load_all()[agent]
    stage = load_stage("dev")
    dev_template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": API_HANDLER,
            "Architectures": ["arm64"],
            "Runtime": "python3.14",
            "MemorySize": spec.deployment.memory_mb,
            "Timeout": spec.deployment.timeout_s,
            "TracingConfig": {"Mode": "Active"},
            "LoggingConfig": Match.object_like({"LogFormat": "JSON"}),
            "Environment": {"Variables": Match.object_like({"STRATUS_AGENT": agent})},
        },
    )
    (layer_id,) = synthesized.resources("dev", "AWS::Lambda::LayerVersion")
    _, fn = _function_for(synthesized, agent)
    props = fn["Properties"]

    assert props["Architectures"] == ["arm64"]
    assert props["Runtime"] == "python3.14"
    assert props["Handler"] == "functions.handlers.api.lambda_handler"
    assert [_ref(layer) for layer in props["Layers"]] == [layer_id]
    assert props["MemorySize"] == spec.deployment.memory_mb
    assert props["Timeout"] == spec.deployment.timeout_s
    assert props.get("ReservedConcurrentExecutions") == spec.deployment.reserved_concurrency
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["LoggingConfig"]["LogFormat"] == "JSON"

    env = props["Environment"]["Variables"]
    expected = set(AGENT_ENV)
    if "orders_table" in spec.resources:
        expected.add("STRATUS_ORDERS_TABLE")
    assert expected <= set(env)
    assert set(env) == set(agent_plan(spec, stage).env_names)
    assert env["STRATUS_STAGE"] == "dev"
    assert env["STRATUS_AGENT"] == agent
    assert env["STRATUS_TIER_FAST"] == stage.tier_fast
    assert env["STRATUS_TIER_SMART"] == stage.tier_smart
    assert env["STRATUS_MAX_BODY_BYTES"] == str(stage.max_body_bytes)
    assert env["STRATUS_IDEMPOTENCY_TTL_S"] == str(stage.idempotency_ttl_s)
    assert env["POWERTOOLS_SERVICE_NAME"] == "stratus"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Stratus"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
    (secret_id,) = [
        i for i in synthesized.resources("dev", "AWS::SecretsManager::Secret") if "ModelSecret" in i
    ]
    assert _ref(env["STRATUS_MODEL_SECRET_NAME"]) == secret_id


def test_orders_table_only_where_a_tool_needs_it(synthesized: Synthesized) -> None:
    having = {
        fn["Properties"]["Environment"]["Variables"].get("STRATUS_AGENT")
        for fn in _functions(synthesized).values()
        if "STRATUS_ORDERS_TABLE" in fn["Properties"]["Environment"]["Variables"]
    }
    assert having == {"order_status", "support"}  # support reuses the lookup_order tool


def test_sessions_table_only_for_agents_with_sessions(synthesized: Synthesized) -> None:
    having = {
        fn["Properties"]["Environment"]["Variables"].get("STRATUS_AGENT")
        for fn in _functions(synthesized).values()
        if "STRATUS_SESSIONS_TABLE" in fn["Properties"]["Environment"]["Variables"]
    }
    assert having == {"support"}


def test_function_log_groups_have_stage_retention(synthesized: Synthesized) -> None:
    for stage, days in (("dev", 14), ("prod", 90)):
        groups = synthesized.resources(stage, "AWS::Logs::LogGroup")
        for fn in _functions(synthesized, stage).values():
            group_id = _ref(fn["Properties"]["LoggingConfig"]["LogGroup"])
            assert groups[group_id]["Properties"]["RetentionInDays"] == days
        policies = {g["DeletionPolicy"] for g in groups.values()}
        assert policies == ({"Delete"} if stage == "dev" else {"Retain"})


def test_platform_and_authorizer_functions(synthesized: Synthesized) -> None:
    stage = load_stage("dev")
    by_handler: dict[tuple[str, str], dict[str, Any]] = {}
    for fn in _functions(synthesized).values():
        props = fn["Properties"]
        agent = props["Environment"]["Variables"].get("STRATUS_AGENT", "<unset>")
        by_handler[(props["Handler"], agent)] = props

    platform = by_handler[(API_HANDLER, "")]
    assert set(platform["Environment"]["Variables"]) == set(
        platform_plan(stage, load_all()).env_names
    )
    assert {"STRATUS_TENANTS_TABLE", "STRATUS_IDEMPOTENCY_TABLE"} <= set(
        platform["Environment"]["Variables"]
    )
    authorizer = by_handler[(AUTHORIZER_HANDLER, "<unset>")]
    assert set(authorizer["Environment"]["Variables"]) == set(authorizer_plan(stage).env_names)
    assert "STRATUS_TENANTS_TABLE" in authorizer["Environment"]["Variables"]
    for props in (platform, authorizer):
        assert props["Architectures"] == ["arm64"]
        assert props["Runtime"] == "python3.14"
        assert props["TracingConfig"] == {"Mode": "Active"}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_agent_functions_publish_a_snapstart_version(synthesized: Synthesized, stage: str) -> None:
    """Every agent function has one published Version and SnapStart on published versions;
    the platform and authorizer functions (lean, on-demand) have neither."""
    versions = synthesized.resources(stage, "AWS::Lambda::Version")
    versioned = [_ref(v["Properties"]["FunctionName"]) for v in versions.values()]
    functions = _functions(synthesized, stage)
    agents = {
        logical_id
        for logical_id, fn in functions.items()
        if fn["Properties"]["Handler"] == API_HANDLER
        and fn["Properties"]["Environment"]["Variables"].get("STRATUS_AGENT")
    }
    assert len(agents) == len(load_all())
    for logical_id in agents:
        assert functions[logical_id]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
        assert versioned.count(logical_id) == 1, logical_id
    lean = {
        logical_id
        for logical_id, fn in functions.items()
        if fn["Properties"]["Handler"] == AUTHORIZER_HANDLER
        or (
            fn["Properties"]["Handler"] == API_HANDLER
            and not fn["Properties"]["Environment"]["Variables"].get("STRATUS_AGENT")
        )
    }
    assert len(lean) == 2
    for logical_id in lean:
        assert "SnapStart" not in functions[logical_id]["Properties"], logical_id
        assert logical_id not in versioned
    # SnapStart needs a Python 3.12+ runtime (and no provisioned concurrency).
    for logical_id in agents:
        props = functions[logical_id]["Properties"]
        major, minor = props["Runtime"].removeprefix("python").split(".")
        assert (int(major), int(minor)) >= (3, 12)
    for version in versions.values():
        assert "ProvisionedConcurrencyConfig" not in version["Properties"]
    constructs = synthesized.stacks[stage].functions
    assert all(fn.version is not None for fn in constructs.agents.values())
    assert constructs.platform.version is None
    assert constructs.authorizer.version is None


def test_construct_exposes_handler_and_env_names(synthesized: Synthesized) -> None:
    functions = synthesized.stacks["dev"].functions
    assert functions.authorizer.handler == AUTHORIZER_HANDLER
    assert functions.platform.handler == API_HANDLER
    order_status = functions.agents["order_status"]
    assert "STRATUS_ORDERS_TABLE" in order_status.stratus_environment_names
    assert "STRATUS_ORDERS_TABLE" not in functions.agents["triage"].environment_names
    assert all(n.startswith("STRATUS_") for n in order_status.stratus_environment_names)


# --- IAM -----------------------------------------------------------------------------


def _statements(synthesized: Synthesized, stage: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in synthesized.resources(stage, "AWS::IAM::Policy").values():
        statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    for role in synthesized.resources(stage, "AWS::IAM::Role").values():
        for inline in role["Properties"].get("Policies", []):
            statements.extend(inline["PolicyDocument"]["Statement"])
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_no_wildcard_permissions_except_xray(synthesized: Synthesized, stage: str) -> None:
    statements = _statements(synthesized, stage)
    assert statements
    for statement in statements:
        actions = _as_list(statement["Action"])
        resources = _as_list(statement["Resource"])
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), statement
        if "*" in resources:
            assert all(
                a.startswith("xray:") or a in STATES_LOG_DELIVERY or a in HOOK_METRIC_READS
                for a in actions
            ) or _namespaced_metric_writes(statement), statement


def test_function_roles_carry_no_managed_policies(synthesized: Synthesized) -> None:
    for logical_id, role in synthesized.resources("dev", "AWS::IAM::Role").items():
        principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        if principal.get("Service") == "lambda.amazonaws.com":
            assert "ManagedPolicyArns" not in role["Properties"], logical_id


def _grants(synthesized: Synthesized, agent: str) -> dict[str, set[str]]:
    """Table/secret logical id -> actions, for the role of an agent's function."""
    _, fn = _function_for(synthesized, agent)
    role_id = _ref(fn["Properties"]["Role"])
    grants: dict[str, set[str]] = {}
    for policy in synthesized.resources("dev", "AWS::IAM::Policy").values():
        if [_ref(r) for r in policy["Properties"]["Roles"]] != [role_id]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for resource in _as_list(statement["Resource"]):
                if isinstance(resource, dict) and ("Ref" in resource or "Fn::GetAtt" in resource):
                    grants.setdefault(_ref(resource), set()).update(_as_list(statement["Action"]))
    return grants


def test_agent_grants(synthesized: Synthesized) -> None:
    tables = _tables_by_name(synthesized, "dev")
    (secret_id,) = [
        i for i in synthesized.resources("dev", "AWS::SecretsManager::Secret") if "ModelSecret" in i
    ]
    order_status = _grants(synthesized, "order_status")
    assert "dynamodb:PutItem" in order_status[tables["idempotency"]]  # idempotency: read/write
    assert "dynamodb:GetItem" in order_status[tables["orders"]]  # orders: read
    assert not any(a in order_status[tables["orders"]] for a in ("dynamodb:PutItem",))
    assert "secretsmanager:GetSecretValue" in order_status[secret_id]
    assert tables["tenants"] not in order_status  # no access to tenants
    # The model gateway's tables: budgets, call ledger, usage rollups, rate limits/breakers.
    for name in ("budgets", "ledger", "usage", "limits"):
        assert "dynamodb:UpdateItem" in order_status[tables[name]]
    triage = _grants(synthesized, "triage")
    assert tables["orders"] not in triage  # no orders without the tool


def _tables_by_name(synthesized: Synthesized, stage: str) -> dict[str, str]:
    """Logical table name -> CloudFormation logical id (``Tables<Name>...``)."""
    found = {}
    ids = list(synthesized.resources(stage, "AWS::DynamoDB::Table"))
    for definition in TABLES:
        prefix = "Tables" + "".join(p.capitalize() for p in definition.name.split("_"))
        (match,) = [i for i in ids if re.fullmatch(prefix + "[0-9A-F]{8}", i)]
        found[definition.name] = match
    return found


# --- tables --------------------------------------------------------------------------


def test_tables_with_template_assertions(dev_template: Any, prod_template: Any) -> None:
    from aws_cdk.assertions import Match

    dev_template.resource_count_is("AWS::DynamoDB::Table", len(TABLES))
    dev_template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [
                {"AttributeName": "tenant_id", "KeyType": "HASH"},
                {"AttributeName": "order_id", "KeyType": "RANGE"},
            ],
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )
    dev_template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {"TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True}},
    )
    prod_template.all_resources_properties(
        "AWS::DynamoDB::Table", Match.object_like({"DeletionProtectionEnabled": True})
    )


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_tables_match_definitions(synthesized: Synthesized, stage: str) -> None:
    resources = synthesized.resources(stage, "AWS::DynamoDB::Table")
    assert len(resources) == len(TABLES)
    ids = _tables_by_name(synthesized, stage)
    for definition in TABLES:
        table = resources[ids[definition.name]]
        keys = (definition.partition_key.name,) + (
            (definition.sort_key.name,) if definition.sort_key else ()
        )
        assert tuple(k["AttributeName"] for k in table["Properties"]["KeySchema"]) == keys
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}
        if definition.ttl_attribute:
            assert props["TimeToLiveSpecification"] == {
                "AttributeName": definition.ttl_attribute,
                "Enabled": True,
            }
        else:
            assert "TimeToLiveSpecification" not in props
        assert props["DeletionProtectionEnabled"] is (stage == "prod")
        assert table["DeletionPolicy"] == ("Retain" if stage == "prod" else "Delete")


def test_prod_stack_is_termination_protected(synthesized: Synthesized) -> None:
    assert synthesized.stacks["prod"].termination_protection is True
    assert synthesized.stacks["dev"].termination_protection is False


def test_secret_is_generated_placeholder(synthesized: Synthesized) -> None:
    ((_, secret),) = [
        (i, s)
        for i, s in synthesized.resources("dev", "AWS::SecretsManager::Secret").items()
        if "ModelSecret" in i
    ]
    generate = secret["Properties"]["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {"api_keys": []}
    assert "SecretString" not in secret["Properties"]
    assert (
        "put-secret-value"
        in synthesized.templates["dev"]["Outputs"]["ModelSecretArn"]["Description"]
    )


# --- API -----------------------------------------------------------------------------


def _methods(synthesized: Synthesized, stage: str = "dev") -> dict[tuple[str, str], Any]:
    resources = synthesized.resources(stage, "AWS::ApiGateway::Resource")

    def path(resource_id: Any) -> str:
        parts: list[str] = []
        while isinstance(resource_id, dict) and "Ref" in resource_id:
            props = resources[resource_id["Ref"]]["Properties"]
            parts.append(props["PathPart"])
            resource_id = props["ParentId"]
        return "/" + "/".join(reversed(parts))

    return {
        (m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"])): m["Properties"]
        for m in synthesized.resources(stage, "AWS::ApiGateway::Method").values()
    }


def _integration_function(method: dict[str, Any], synthesized: Synthesized | None = None) -> str:
    """The logical id of the Lambda function a proxy integration invokes (through its
    ``live`` alias for an agent's function: ``Ref`` of the alias in the URI)."""
    parts = method["Integration"]["Uri"]["Fn::Join"][1]
    (target_id,) = {
        p["Fn::GetAtt"][0] if "Fn::GetAtt" in p else p["Ref"]
        for p in parts
        if isinstance(p, dict)
        and ("Fn::GetAtt" in p or (isinstance(p.get("Ref"), str) and "AWS::" not in p["Ref"]))
    }
    if synthesized is not None:
        aliases = synthesized.resources("dev", "AWS::Lambda::Alias")
        if target_id in aliases:
            return str(aliases[target_id]["Properties"]["FunctionName"]["Ref"])
    return str(target_id)


def test_routes_and_authorization(synthesized: Synthesized) -> None:
    methods = _methods(synthesized)
    routes = api_routes(load_all())
    assert set(methods) == {(r.method, r.path) for r in routes}
    (authorizer_id,) = synthesized.resources("dev", "AWS::ApiGateway::Authorizer")
    function_of = {
        env["Variables"].get("STRATUS_AGENT", "authorizer"): logical_id
        for logical_id, fn in _functions(synthesized).items()
        for env in (fn["Properties"]["Environment"],)
        if fn["Properties"]["Handler"] in (API_HANDLER, AUTHORIZER_HANDLER)
    }
    for route in routes:
        method = methods[(route.method, route.path)]
        assert method["Integration"]["Type"] == "AWS_PROXY"
        target = route.target.removeprefix("agent:") if route.target != "platform" else ""
        assert _integration_function(method, synthesized) == function_of[target], route
        if route.authorized:
            assert method["AuthorizationType"] == "CUSTOM", route
            assert method["AuthorizerId"] == {"Ref": authorizer_id}, route
        else:
            assert method["AuthorizationType"] == "NONE", route
            assert "AuthorizerId" not in method

    public = {path for (verb, path), m in methods.items() if m["AuthorizationType"] == "NONE"}
    assert public == {"/v1/health", "/v1/openapi.json"}
    # Unknown agents fall through to the platform function (its 404 agent_not_found).
    fallback = methods[("ANY", "/v1/agents/{agent}/{proxy+}")]
    assert _integration_function(fallback, synthesized) == function_of[""]


def test_bodies_are_validated_by_the_handlers_not_a_gateway_model(
    synthesized: Synthesized,
) -> None:
    # A gateway model would answer BAD_REQUEST_BODY for both malformed JSON (400
    # invalid_json) and schema errors (422 validation_error); the handlers tell them apart.
    assert synthesized.resources("dev", "AWS::ApiGateway::RequestValidator") == {}
    assert synthesized.resources("dev", "AWS::ApiGateway::Model") == {}


def test_request_authorizer(dev_template: Any, synthesized: Synthesized) -> None:
    dev_template.resource_count_is("AWS::ApiGateway::Authorizer", 1)
    ((_, authorizer),) = synthesized.resources("dev", "AWS::ApiGateway::Authorizer").items()
    props = authorizer["Properties"]
    assert props["Type"] == "REQUEST"
    assert props["IdentitySource"] == "method.request.header.Authorization"
    assert props["AuthorizerResultTtlInSeconds"] == 60
    uri = json.dumps(props["AuthorizerUri"])
    authorizer_fn = next(
        logical_id
        for logical_id, fn in _functions(synthesized).items()
        if fn["Properties"]["Handler"] == AUTHORIZER_HANDLER
    )
    assert authorizer_fn in uri


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_stage_settings(synthesized: Synthesized, stage: str) -> None:
    config = load_stage(stage)
    ((_, api_stage),) = synthesized.resources(stage, "AWS::ApiGateway::Stage").items()
    props = api_stage["Properties"]
    assert props["StageName"] == stage
    assert props["TracingEnabled"] is True
    (settings,) = [s for s in props["MethodSettings"] if s["ResourcePath"] == "/*"]
    assert settings["HttpMethod"] == "*" and settings["ResourcePath"] == "/*"
    assert settings["ThrottlingRateLimit"] == config.api_throttle_rate
    assert settings["ThrottlingBurstLimit"] == config.api_throttle_burst
    assert settings["LoggingLevel"] == "INFO"
    assert settings["DataTraceEnabled"] is False
    assert settings["MetricsEnabled"] is True
    access_log = json.loads(props["AccessLogSetting"]["Format"])
    for field in ("requestId", "ip", "caller", "httpMethod", "path", "status"):
        assert field in access_log
    assert access_log["authorizerError"] == "$context.authorizer.error"
    assert access_log["responseLatency"] == "$context.responseLatency"


#: Values API Gateway may substitute, including ones with quotes and backslashes.
SUBSTITUTIONS = {
    "$context.requestId": "c0ffee00-0000-4000-8000-000000000000",
    "$context.error.messageString": json.dumps('Quote " and backslash \\'),
    "$context.error.validationErrorString": (
        '[object has missing required properties ([\\"input\\"])]'
    ),
    "$context.authorizer.home_region": "eu-west-1",
}

GATEWAY_RESPONSES = {
    "UNAUTHORIZED": ("401", "unauthorized"),
    "ACCESS_DENIED": ("403", "wrong_region"),
    "MISSING_AUTHENTICATION_TOKEN": ("404", "not_found"),
    "REQUEST_TOO_LARGE": ("413", "payload_too_large"),
    "BAD_REQUEST_BODY": ("422", "validation_error"),
    "THROTTLED": ("429", "throttled"),
    "INTEGRATION_TIMEOUT": ("504", "timeout"),
    "DEFAULT_4XX": (None, "bad_request"),
    "DEFAULT_5XX": (None, "internal_error"),
}


def test_gateway_responses_use_the_error_shape(synthesized: Synthesized) -> None:
    found = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synthesized.resources("dev", "AWS::ApiGateway::GatewayResponse").values()
    }
    assert set(found) == set(GATEWAY_RESPONSES)
    for response_type, (status, code) in GATEWAY_RESPONSES.items():
        props = found[response_type]
        assert props.get("StatusCode") == status, response_type
        template = props["ResponseTemplates"]["application/json"]
        rendered = re.sub(r"\$context\.[A-Za-z_.]+", lambda m: SUBSTITUTIONS[m.group(0)], template)
        body = json.loads(rendered)  # valid JSON after API Gateway's substitution
        assert set(body) == {"error"}
        assert body["error"]["code"] == code
        assert body["error"]["request_id"] == SUBSTITUTIONS["$context.requestId"]
        assert body["error"]["message"]
    assert (
        "$context.error.validationErrorString"
        in found["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"]
    )


def test_gateway_statuses_match_the_handlers() -> None:
    from stratus.errors import PayloadTooLarge, RouteNotFound, Unauthorized, ValidationFailed

    for response_type, error in (
        ("UNAUTHORIZED", Unauthorized),
        ("MISSING_AUTHENTICATION_TOKEN", RouteNotFound),
        ("REQUEST_TOO_LARGE", PayloadTooLarge),
        ("BAD_REQUEST_BODY", ValidationFailed),
    ):
        assert GATEWAY_RESPONSES[response_type] == (str(error.status), error.code)


def test_outputs(synthesized: Synthesized) -> None:
    outputs = synthesized.templates["dev"]["Outputs"]
    for name in (
        "ApiUrl",
        "TenantsTableName",
        "ModelSecretArn",
        "OrdersTableName",
        "IdempotencyTableName",
    ):
        assert name in outputs


# --- issue 10: lease sweep, callback deliveries, the lease index ----------------------


def _handler_of(synthesized: Synthesized, function_ref: Any) -> str:
    functions = _functions(synthesized)
    if "Fn::GetAtt" in function_ref or "Ref" in function_ref:
        logical = (
            function_ref["Fn::GetAtt"][0] if "Fn::GetAtt" in function_ref else function_ref["Ref"]
        )
        if logical in functions:
            return str(functions[logical]["Properties"]["Handler"])
    # An agent function's ``live`` alias (CDK renders its qualified name, <function>:live).
    aliases = synthesized.resources("dev", "AWS::Lambda::Alias")
    text = json.dumps(function_ref)
    (alias,) = [logical for logical in aliases if f'"{logical}"' in text]
    target = aliases[alias]["Properties"]["FunctionName"]["Ref"]
    return str(functions[target]["Properties"]["Handler"])


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_lease_sweep_runs_every_minute_with_a_dlq(synthesized: Synthesized, stage: str) -> None:
    from infra.topology import SWEEPER_HANDLER

    (rule,) = synthesized.resources(stage, "AWS::Events::Rule").values()
    props = rule["Properties"]
    assert props["ScheduleExpression"] == "rate(1 minute)" and props["State"] == "ENABLED"
    (target,) = props["Targets"]
    assert _handler_of(synthesized, target["Arn"]) == SWEEPER_HANDLER
    assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] == 2
    permissions = synthesized.resources(stage, "AWS::Lambda::Permission").values()
    assert any(p["Properties"]["Principal"] == "events.amazonaws.com" for p in permissions)


def test_callbacks_have_their_own_queue_dlq_and_consumer(synthesized: Synthesized) -> None:
    from infra.topology import CALLBACK_MAX_RECEIVE_COUNT, CALLBACKS_HANDLER

    mappings = synthesized.resources("dev", "AWS::Lambda::EventSourceMapping").values()
    consumers = {_handler_of(synthesized, m["Properties"]["FunctionName"]): m for m in mappings}
    mapping = consumers[CALLBACKS_HANDLER]
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_logical = mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
    queue = synthesized.resources("dev", "AWS::SQS::Queue")[queue_logical]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == CALLBACK_MAX_RECEIVE_COUNT
    callbacks = next(
        fn
        for fn in _functions(synthesized).values()
        if fn["Properties"]["Handler"] == CALLBACKS_HANDLER
    )
    env = callbacks["Properties"]["Environment"]["Variables"]
    assert {"STRATUS_CALLBACK_SECRET_NAME", "STRATUS_CALLBACK_QUEUE_URL"} <= set(env)
    # Only the callbacks function reads the signing key.
    readers = [
        fn["Properties"]["Handler"]
        for fn in _functions(synthesized).values()
        if "STRATUS_CALLBACK_SECRET_NAME" in fn["Properties"]["Environment"]["Variables"]
    ]
    assert readers == [CALLBACKS_HANDLER]


def test_the_jobs_table_has_the_sparse_lease_index(dev_template: Any) -> None:
    from aws_cdk.assertions import Match

    dev_template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": "leases",
                    "KeySchema": [
                        {"AttributeName": "lease_shard", "KeyType": "HASH"},
                        {"AttributeName": "lease_until", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "KeySchema": Match.array_with([{"AttributeName": "job_id", "KeyType": "HASH"}]),
        },
    )

"""What runs where, as plain data: functions (environment, grants), routes, gateway errors.

The CDK constructs build Lambda functions and API Gateway routes from these
plans, and the local cloud runs the same handlers with the same variables behind
the same routes, so the two cannot drift. Resource values (table names, the
secret ARN) are the only part that differs: CDK fills in tokens, the local cloud
its own names, both through :meth:`FunctionPlan.environment`. No CDK import here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.config import StageConfig
from infra.definitions import IDEMPOTENCY, ORDERS, TENANTS
from stratus.agents import AgentSpec, Resource
from stratus.errors import (
    PayloadTooLarge,
    RouteNotFound,
    StratusError,
    Unauthorized,
    ValidationFailed,
)

API_HANDLER = "functions.handlers.api.lambda_handler"
AUTHORIZER_HANDLER = "functions.handlers.authorizer.lambda_handler"
MODEL_SECRET_ENV = "STRATUS_MODEL_SECRET_NAME"  # noqa: S105 - a variable name

FunctionKind = Literal["agent", "platform", "authorizer"]
#: ``describe`` is DescribeTable only: what a health check needs, nothing more.
TableAccess = Literal["read", "read_write", "describe"]

#: Every function logs, traces and emits metrics under one service name.
POWERTOOLS_ENV: Mapping[str, str] = {
    "POWERTOOLS_SERVICE_NAME": "stratus",
    "POWERTOOLS_METRICS_NAMESPACE": "Stratus",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    # Model outputs may hold customer data and exceed X-Ray's 64 KB segment limit.
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
}

#: What each agent resource (``AgentSpec.resources``) means for the stack: the
#: table it is, and the access its tools need. A new resource kind fails loudly.
AGENT_RESOURCES: Mapping[Resource, tuple[str, TableAccess]] = {
    "orders_table": (ORDERS.name, "read"),
}

#: Table logical name -> the variable that carries its physical name.
TABLE_ENV: Mapping[str, str] = {t.name: t.env_var for t in (TENANTS, IDEMPOTENCY, ORDERS)}


@dataclass(frozen=True, eq=False)
class FunctionPlan:
    """One Lambda function: handler, sizing, environment and the access it is granted."""

    key: str
    kind: FunctionKind
    construct_id: str
    handler: str
    description: str
    memory_mb: int
    timeout_s: int
    reserved_concurrency: int | None
    #: Variables whose values are known before deployment.
    static_env: Mapping[str, str]
    #: Table logical name -> access; each also sets that table's ``STRATUS_*_TABLE``.
    tables: Mapping[str, TableAccess] = field(default_factory=dict)
    #: Read access to the model secret, passed as ``STRATUS_MODEL_SECRET_NAME``.
    model_secret: bool = False
    #: The agent this function serves; None for the platform and the authorizer.
    agent: str | None = None

    @property
    def env_names(self) -> tuple[str, ...]:
        """Every environment variable this function gets, sorted."""
        names = set(self.static_env)
        names.update(TABLE_ENV[table] for table in self.tables)
        if self.model_secret:
            names.add(MODEL_SECRET_ENV)
        return tuple(sorted(names))

    @property
    def stratus_env_names(self) -> tuple[str, ...]:
        """The ``STRATUS_*`` variables (what ``stratus.config.Settings`` reads)."""
        return tuple(name for name in self.env_names if name.startswith("STRATUS_"))

    def environment(
        self, *, table_names: Mapping[str, str], model_secret_id: str | None = None
    ) -> dict[str, str]:
        """The full environment, given physical table names and the secret id.

        CDK passes tokens (``table.table_name``, ``secret.secret_arn``); the local
        cloud passes the names it created. A missing value is an error, not a blank.
        """
        env = dict(self.static_env)
        for table in self.tables:
            if table not in table_names:
                raise KeyError(f"{self.key}: no physical name given for table {table!r}")
            env[TABLE_ENV[table]] = table_names[table]
        if self.model_secret:
            if not model_secret_id:
                raise KeyError(f"{self.key}: no model secret id given")
            env[MODEL_SECRET_ENV] = model_secret_id
        return env


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _base_env(stage: StageConfig, agent: str) -> dict[str, str]:
    return {"STRATUS_STAGE": stage.name, "STRATUS_AGENT": agent, **POWERTOOLS_ENV}


def agent_plan(spec: AgentSpec, stage: StageConfig) -> FunctionPlan:
    """The function of one agent: sized by its spec, granted what its tools need."""
    tables: dict[str, TableAccess] = {IDEMPOTENCY.name: "read_write"}
    for resource in sorted(spec.resources):
        if resource not in AGENT_RESOURCES:
            raise ValueError(f"agent {spec.name!r} needs {resource!r}, which the stack lacks")
        table, access = AGENT_RESOURCES[resource]
        tables[table] = access
    env = _base_env(stage, spec.name)
    env.update(
        {
            "STRATUS_TIER_FAST": stage.tier_fast,
            "STRATUS_TIER_SMART": stage.tier_smart,
            "STRATUS_MAX_BODY_BYTES": str(stage.max_body_bytes),
            "STRATUS_IDEMPOTENCY_TTL_S": str(stage.idempotency_ttl_s),
        }
    )
    return FunctionPlan(
        key=f"agent:{spec.name}",
        kind="agent",
        construct_id=f"Agent{_pascal(spec.name)}",
        handler=API_HANDLER,
        description=f"Stratus agent {spec.name} {spec.version} ({spec.tier} tier)",
        memory_mb=spec.deployment.memory_mb,
        timeout_s=spec.deployment.timeout_s,
        reserved_concurrency=spec.deployment.reserved_concurrency,
        static_env=env,
        tables=tables,
        model_secret=True,
        agent=spec.name,
    )


def platform_plan(stage: StageConfig) -> FunctionPlan:
    """Health, OpenAPI and the 404 for unknown agents; never calls a model."""
    env = _base_env(stage, "")
    env["STRATUS_MAX_BODY_BYTES"] = str(stage.max_body_bytes)
    return FunctionPlan(
        key="platform",
        kind="platform",
        construct_id="Platform",
        handler=API_HANDLER,
        description="Stratus platform routes: health, OpenAPI, unknown agents",
        memory_mb=512,
        timeout_s=10,
        reserved_concurrency=None,
        static_env=env,
        # The health check reads the tenants table and describes the idempotency one.
        tables={TENANTS.name: "read", IDEMPOTENCY.name: "describe"},
    )


def authorizer_plan(stage: StageConfig) -> FunctionPlan:
    """The REQUEST authorizer: API key -> tenant, from the tenants table."""
    env = {"STRATUS_STAGE": stage.name, **POWERTOOLS_ENV}
    return FunctionPlan(
        key="authorizer",
        kind="authorizer",
        construct_id="Authorizer",
        handler=AUTHORIZER_HANDLER,
        description="Stratus API authorizer: API key to tenant",
        # Runs before every uncached request: enough memory for a fast cold start.
        memory_mb=512,
        timeout_s=10,
        reserved_concurrency=None,
        static_env=env,
        tables={TENANTS.name: "read"},
    )


def function_plans(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> list[FunctionPlan]:
    """Every function of the stack: the platform, the authorizer, one per agent."""
    plans = [platform_plan(stage), authorizer_plan(stage)]
    plans.extend(agent_plan(specs[name], stage) for name in sorted(specs))
    return plans


@dataclass(frozen=True)
class Route:
    """One API Gateway method: path, verb, target function, auth and validation."""

    method: str
    path: str
    target: str
    authorized: bool
    #: Validate the JSON body against ``stratus.contracts.InvokeRequest``.
    validate_invoke_body: bool = False


def api_routes(agent_names: Iterable[str]) -> list[Route]:
    """The REST API: public platform routes, per-agent routes, the unknown-agent fallback.

    API Gateway prefers literal path segments over ``{agent}``, so a known agent
    reaches its own function and any other name reaches the platform's 404.
    """
    routes = [
        Route("GET", "/v1/health", "platform", authorized=False),
        Route("GET", "/v1/openapi.json", "platform", authorized=False),
    ]
    for name in sorted(agent_names):
        target = f"agent:{name}"
        routes.append(
            Route("POST", f"/v1/agents/{name}/invoke", target, True, validate_invoke_body=True)
        )
        routes.append(Route("ANY", f"/v1/agents/{name}/{{proxy+}}", target, authorized=True))
    routes.append(Route("ANY", "/v1/agents/{agent}/{proxy+}", "platform", authorized=True))
    return routes


@dataclass(frozen=True)
class GatewayError:
    """An error API Gateway answers itself, in the handlers' error shape.

    The CDK stack turns each into a gateway response; the local gateway answers
    the same status, code and message for the same situation.
    """

    name: str
    #: The API Gateway response type (``UNAUTHORIZED``, ``DEFAULT_4XX``, ...).
    response_type: str
    #: None keeps the status API Gateway chose (the DEFAULT_* families).
    status: int | None
    code: str
    #: A literal message, or a ``$context`` variable that API Gateway substitutes.
    message: str
    #: True if ``message`` is a variable that already yields a quoted JSON string.
    message_is_json: bool = False

    def template(self) -> str:
        """The response template: valid JSON once API Gateway substitutes the variables."""
        sentinel = "__STRATUS_MESSAGE__"
        text = json.dumps(
            self.body("$context.requestId", sentinel if self.message_is_json else None),
            separators=(",", ":"),
        )
        return text.replace(f'"{sentinel}"', self.message) if self.message_is_json else text

    def body(self, request_id: str, message: str | None = None) -> dict[str, Any]:
        """The JSON body, with ``message`` replacing the default (local gateway)."""
        return {
            "error": {
                "code": self.code,
                "message": self.message if message is None else message,
                "request_id": request_id,
            }
        }


#: Status codes and codes come from ``stratus.errors`` where the handlers have them.
GATEWAY_ERRORS: tuple[GatewayError, ...] = (
    GatewayError(
        "Unauthorized",
        "UNAUTHORIZED",
        Unauthorized.status,
        Unauthorized.code,
        "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
    ),
    GatewayError(
        "AccessDenied", "ACCESS_DENIED", 403, "forbidden", "This key may not call this route."
    ),
    # API Gateway's answer for a route that does not exist (not only for missing tokens).
    GatewayError(
        "MissingAuthenticationToken",
        "MISSING_AUTHENTICATION_TOKEN",
        RouteNotFound.status,
        RouteNotFound.code,
        "No such route.",
    ),
    GatewayError(
        "RequestTooLarge",
        "REQUEST_TOO_LARGE",
        PayloadTooLarge.status,
        PayloadTooLarge.code,
        "The request body is too large.",
    ),
    # validationErrorString comes JSON-escaped from API Gateway; it goes inside quotes.
    GatewayError(
        "BadRequestBody",
        "BAD_REQUEST_BODY",
        ValidationFailed.status,
        ValidationFailed.code,
        "$context.error.validationErrorString",
    ),
    GatewayError("Throttled", "THROTTLED", 429, "throttled", "Too many requests; retry later."),
    GatewayError(
        "IntegrationTimeout",
        "INTEGRATION_TIMEOUT",
        504,
        "timeout",
        "The agent did not answer in time; use an asynchronous job for long work.",
    ),
    # Any other 4xx API Gateway produces keeps its status; messageString is quoted JSON.
    GatewayError(
        "Default4xx",
        "DEFAULT_4XX",
        None,
        "bad_request",
        "$context.error.messageString",
        message_is_json=True,
    ),
    GatewayError(
        "Default5xx", "DEFAULT_5XX", None, StratusError.code, "An internal error occurred."
    ),
)


def gateway_error(response_type: str) -> GatewayError:
    """The gateway error for an API Gateway response type, e.g. ``UNAUTHORIZED``."""
    for error in GATEWAY_ERRORS:
        if error.response_type == response_type:
            return error
    raise KeyError(f"no gateway error for {response_type!r}")

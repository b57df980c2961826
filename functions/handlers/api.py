"""The REST API handler, shared by every agent function and the platform function.

Each agent's function runs this module with ``STRATUS_AGENT=<name>`` and serves
only that agent; the platform function (``STRATUS_AGENT`` empty) serves
``/v1/health`` and ``/v1/openapi.json`` and answers ``agent_not_found`` for any
agent API Gateway routed to it. Importing the module loads no model code; the
init hook (``stratus.snapstart``) makes an agent function import ``openai`` and
build its clients before its first request, and leaves the platform function lean.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import logging
import re
from contextlib import nullcontext
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

import stratus
from functions.agents import load_agent
from functions.handlers import fairness, streamed
from functions.handlers.common import (
    ERROR_RESPONSES,
    ERROR_SCHEMA_REF,
    IdempotencyKey,
    deadline,
    request_id,
    require_scope,
    served_agent,
    served_release,
    tag_served_release,
    tenant_id,
)
from functions.handlers.principals import principal
from stratus import after_response, composition, correlation, otel, snapstart, task_metrics
from stratus.contracts import (
    MAX_JSON_DEPTH,
    ErrorResponse,
    InvokeRequest,
    InvokeResponse,
    json_too_deep,
)
from stratus.errors import (
    AgentNotFound,
    InputTooLarge,
    InvalidJson,
    PayloadTooLarge,
    RouteNotFound,
    StratusError,
    UnsupportedMediaType,
    ValidationFailed,
)
from stratus.flags import AgentFlags, applied
from stratus.health import HealthResponse, check_health
from stratus.observability import logger, metrics, set_agent_dimension, tracer

#: Route modules included below (each exposes ``router``, a Powertools ``Router``).
ROUTER_MODULES: tuple[str, ...] = (
    "functions.handlers.routes_audit",
    "functions.handlers.routes_callback_keys",
    "functions.handlers.routes_jobs",
    "functions.handlers.routes_keys",
    "functions.handlers.routes_memory",
    "functions.handlers.routes_reviews",
    "functions.handlers.routes_sessions",
    "functions.handlers.routes_streams",
    "functions.handlers.routes_usage",
)
AGENT_PATH = re.compile(r"^/v1/agents/([^/]+)(?:/|$)")
#: Methods whose body the routes read (and ``_guard`` checks before they parse it).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Routes without the authorizer: no ``bearerAuth`` in the OpenAPI document.
PUBLIC_PATHS = frozenset({"/v1/health", "/v1/openapi.json"})
BEARER_AUTH = {
    "type": "http",
    "scheme": "bearer",
    "description": "A tenant API key: 'Authorization: Bearer <key>' (answers 401 without one).",
}
app = APIGatewayRestResolver(enable_validation=True)


def _error(err: StratusError) -> Response[str]:
    rid = request_id(app.current_event)
    return Response(
        status_code=err.status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(err.body(rid)),
        headers=err.headers or None,
    )


@app.exception_handler(StratusError)
def _stratus_error(err: StratusError) -> Response[str]:
    if err.status >= 500:
        logger.error("request failed", extra={"code": err.code, "error": err.message})
    else:
        logger.info("request rejected", extra={"code": err.code, "status": err.status})
    return _error(err)


@app.exception_handler(RequestUnsupportedContentType)
def _unsupported_content_type(_: RequestUnsupportedContentType) -> Response[str]:
    return _error(UnsupportedMediaType("the request body must be JSON (application/json)"))


@app.exception_handler(RequestValidationError)
def _validation_error(err: RequestValidationError) -> Response[str]:
    problems = err.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return _error(InvalidJson("the request body is not valid JSON"))
    fields = [
        {
            "field": ".".join(str(part) for part in p.get("loc", ())),
            "message": p.get("msg", ""),
            "type": p.get("type", ""),
        }
        for p in problems
    ]
    first = fields[0]["field"] if fields else "body"
    return _error(ValidationFailed(f"invalid request: {first}", details={"fields": fields}))


@app.exception_handler(Exception)
def _unexpected(err: Exception) -> Response[str]:
    logger.exception("unhandled error")
    return _error(StratusError("an internal error occurred; it has been logged"))


@app.not_found
def _not_found(_: Exception) -> Response[str]:
    return _error(
        RouteNotFound(f"no route for {app.current_event.http_method} {app.current_event.path}")
    )


@app.get(
    "/v1/health",
    summary="Health of this function's dependencies",
    responses={
        status: {
            "description": text,
            "content": {"application/json": {"model": HealthResponse}},
        }
        for status, text in ((200, "Every dependency answers"), (503, "A dependency failed"))
    },
)
def health() -> Response[str]:
    runtime = composition.current()
    checked = check_health(runtime.health_probes())  # each dependency, ok and latency_ms
    body = HealthResponse(
        status="ok" if checked.healthy else "degraded",
        version=stratus.__version__,
        agent=runtime.settings.agent or None,
        checks=checked.summary(agent=bool(runtime.settings.agent)),
        dependencies=checked.dependencies,
        failing=checked.failing,
        **(served_release() or {}),
    )
    return Response(
        status_code=200 if checked.healthy else 503,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(),
    )


@app.get(
    "/v1/openapi.json",
    summary="This OpenAPI 3.1 document",
    responses={
        200: {
            "description": "The OpenAPI document",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
def openapi() -> Response[str]:
    body = json.dumps(openapi_document())
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=body)


def openapi_document() -> dict[str, Any]:
    """Powertools' document, completed: the error schema, the bearer key, error responses.

    Powertools references ``ErrorResponse`` (declared by hand in ``ERROR_RESPONSES``)
    without defining it and adds its own 422 shape; every 4xx/5xx here is the one error
    shape, and every route but the public ones needs the bearer key.
    """
    doc: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(title="Stratus API", version=stratus.__version__)
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorResponse"] = error
    components["securitySchemes"] = {"bearerAuth": BEARER_AUTH}
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            operation["security"] = [] if path in PUBLIC_PATHS else [{"bearerAuth": []}]
            responses = operation.setdefault("responses", {})
            if path in PUBLIC_PATHS:
                responses.pop("422", None)  # no parameters, no body: nothing to validate
            else:
                responses.setdefault("401", ERROR_RESPONSES[401])
            if "204" in responses:  # Powertools gives it the return type's content
                responses["204"].pop("content", None)
            for status, response in responses.items():
                if int(status) >= 400 and path not in PUBLIC_PATHS:
                    response["description"] = "Error"
                    response["content"] = {
                        "application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}
                    }
    for name in ("HTTPValidationError", "ValidationError"):  # Powertools' 422 shape, never sent
        if f'"#/components/schemas/{name}"' not in json.dumps(doc):
            schemas.pop(name, None)
    return doc


@app.post(
    "/v1/agents/<agent>/invoke",
    summary="Invoke an agent synchronously",
    responses={
        200: {
            "description": "The agent's answer",
            "content": {"application/json": {"model": InvokeResponse}},
        },
        **ERROR_RESPONSES,
    },
)
def invoke(
    agent: str,
    body: Annotated[InvokeRequest, Body()],
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    service = composition.current().invoke_service(served_agent(agent))
    event = app.current_event
    require_scope(event, "invoke")
    tenant, rid = tenant_id(event), request_id(event)
    limit = deadline(app.lambda_context)
    who = principal(event)  # the key's role and end customer reach the tools
    if idempotency_key is not None:
        return service.invoke_idempotent(
            body,
            key=idempotency_key,
            tenant_id=tenant,
            request_id=rid,
            lambda_context=app.lambda_context,
            deadline=limit,
            principal=who,
        )
    return service.invoke(body, tenant_id=tenant, request_id=rid, deadline=limit, principal=who)


def _guard(event: dict[str, Any]) -> StratusError | None:
    """Checks that must run before body validation: size, the agent, then the body's text.

    Every request body is UTF-8 JSON: one that is not UTF-8, or nests deeper than
    ``MAX_JSON_DEPTH``, is ``invalid_json`` here, before anything parses it.
    """
    settings = composition.current().settings
    body = event.get("body") or ""
    raw = _raw_body(body) if event.get("isBase64Encoded") else body.encode()
    if raw is None:
        return InvalidJson("the request body is not valid base64")
    if len(raw) > settings.max_body_bytes:
        return PayloadTooLarge(
            f"the body is {len(raw)} bytes; the limit is {settings.max_body_bytes}",
            details={"limit": settings.max_body_bytes},
        )
    match = AGENT_PATH.match(str(event.get("path") or ""))
    if match and match.group(1) != settings.agent:
        return AgentNotFound(
            f"no agent named {match.group(1)!r}", details={"agent": match.group(1)}
        )
    if not raw or str(event.get("httpMethod") or "").upper() not in BODY_METHODS:
        return None
    if not _is_json_body(event):
        return UnsupportedMediaType(
            "the request body must be JSON: send 'Content-Type: application/json'"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidJson("the request body is not valid JSON: it is not UTF-8")
    if json_too_deep(text):
        return InvalidJson(
            f"the request body is not accepted: JSON nesting too deep "
            f"(more than {MAX_JSON_DEPTH} levels)",
            details={"max_depth": MAX_JSON_DEPTH},
        )
    if event.get("isBase64Encoded"):  # valid UTF-8: hand the handler the text
        event["body"], event["isBase64Encoded"] = text, False
    return None


def _is_json_body(event: dict[str, Any]) -> bool:
    """Whether the body is declared JSON (no ``Content-Type`` counts as JSON).

    Media types are case-insensitive: the header is rewritten in lower case so that
    Powertools, which compares it case-sensitively, parses the body as JSON too.
    """
    for section in ("headers", "multiValueHeaders"):
        headers = event.get(section) or {}
        for key in list(headers):
            if key.lower() != "content-type":
                continue
            value = headers[key][-1] if isinstance(headers[key], list) else headers[key]
            media = str(value or "").split(";", 1)[0].strip().lower()
            if media and media != "application/json":
                return False
            lowered = str(value).lower()
            headers[key] = [lowered] if section == "multiValueHeaders" else lowered
    return True


def _raw_body(body: str) -> bytes | None:
    try:
        return base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        return None


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # On Lambda, the model calls' post-call writes finish after the answer is sent
    # (stratus.after_response); elsewhere before the handler returns. Outermost, so that
    # the extension hears the handler is done whatever fails inside.
    with after_response.invocation(getattr(context, "aws_request_id", "")):
        return _observed(event, context)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def _observed(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # X-Correlation-Id (or a new id): every log line, the jobs it submits, the answer's header.
    cid = correlation.bind(correlation.from_event(event))
    try:
        return correlation.with_response_header(_handle(event, context), cid)
    finally:
        otel.flush()  # this invocation's spans (no-op when OTLP export is off)


def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    set_agent_dimension(composition.current().settings.agent or "platform")
    tag_served_release()
    if "stratus_stream" in event:  # a streamed request from the stream router (issue 17)
        return streamed.handle(event, context)
    problem = _guard(event)
    flags: AgentFlags | None = None
    if problem is None:
        try:  # the kill switch (503 agent_disabled): before the rate check's write
            flags = _agent_flags(event)
        except StratusError as refused:
            problem = refused
    # Then the tenant's request rate (429 throttled, scope tenant: functions.handlers.fairness).
    problem = problem or fairness.admit(event)
    if problem is not None:
        rid = str((event.get("requestContext") or {}).get("requestId") or "")
        return {
            "statusCode": problem.status,
            "headers": {"Content-Type": content_types.APPLICATION_JSON, **problem.headers},
            "body": json.dumps(problem.body(rid)),
            "isBase64Encoded": False,
        }
    try:
        # The request's feature flags, bound for the runner (tier, prompt, tools, classifier).
        with applied(flags) if flags is not None else nullcontext():
            return app.resolve(event, context)
    finally:
        # The request's audit events, in one write after the answer (none: no write).
        composition.current().audit.flush()


def _agent_flags(event: dict[str, Any]) -> AgentFlags | None:
    """The feature flags of a request to the served agent's routes (None for any other
    route, or one the authorizer did not pass); ``AgentDisabled`` when they switch it
    off. Resolved from the cached flag document and the authorizer's context: no round trip.
    """
    runtime = composition.current()
    agent = runtime.settings.agent
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    tenant = str(authorizer.get("tenant_id") or "")
    if not agent or not tenant or not AGENT_PATH.match(str(event.get("path") or "")):
        return None
    who = principal(APIGatewayProxyEvent(event))
    return runtime.agent_flags(served_agent(agent), tenant, who)


def warm_routes(runtime: composition.Runtime) -> None:
    """Resolve one invoke that the runner rejects before any call (``input_too_large``):
    routing, body validation, the route's arguments, the service and the error mapping
    run once before the first request. No AWS call, no model call; logs stay quiet."""
    agent = runtime.settings.agent
    if not agent:
        return
    otel.prime()  # with OTLP export on, its exporter is built at init too
    limit = served_agent(agent).limits.max_input_chars
    path = f"/v1/agents/{agent}/invoke"
    event = {
        "resource": "/v1/agents/{agent}/invoke",
        "path": path,
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"agent": agent},
        "requestContext": {
            "requestId": "stratus-priming",
            "path": path,
            "authorizer": {"tenant_id": "stratus-priming", "scopes": "invoke"},
        },
        "body": json.dumps({"input": "x" * (limit + 1)}),
        "isBase64Encoded": False,
    }
    level = logger.log_level
    logger.setLevel(logging.WARNING)  # "request rejected" is not news at init
    try:
        with task_metrics.muted():  # not a request: no Requests, no input_too_large error
            response = app.resolve(event, cast(LambdaContext, None))  # no context yet
    finally:
        logger.setLevel(level)
        app.clear_context()
    if response.get("statusCode") != InputTooLarge.status:
        raise RuntimeError(f"the priming request answered {response.get('statusCode')}")


# Routers of the other API areas; each module registers its routes on ``router``.
for _module in ROUTER_MODULES:
    app.include_router(importlib.import_module(_module).router)

# Init: an agent function builds its runtime (openai, clients, spec, prompt, prices)
# before its first request; the platform function only reads its settings. SnapStart
# runs the hook before the snapshot; otherwise ``init_phase`` runs it here, in Lambda's
# init phase only (see ``stratus.snapstart``).
snapstart.register(load_agent, warm_routes)
snapstart.init_phase()
# On Lambda (and only there), an agent function registers the internal extension that
# writes its post-call bookkeeping after the response: it must register in the init phase.
after_response.start()

"""The REST API handler, shared by every agent function and the platform function.

Each agent's function runs this module with ``STRATUS_AGENT=<name>`` and serves
only that agent; the platform function (``STRATUS_AGENT`` empty) serves
``/v1/health`` and ``/v1/openapi.json`` and answers ``agent_not_found`` for any
agent API Gateway routed to it. Model code (and ``openai``) is imported only
when an invoke runs, so the platform function never loads it.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

import stratus
from functions.handlers.common import (
    ERROR_RESPONSES,
    deadline,
    request_id,
    served_agent,
    tenant_id,
)
from stratus import composition
from stratus.contracts import HealthResponse, InvokeRequest, InvokeResponse
from stratus.errors import (
    AgentNotFound,
    InvalidJson,
    PayloadTooLarge,
    RouteNotFound,
    StratusError,
    ValidationFailed,
)
from stratus.health import run_checks
from stratus.observability import logger, metrics, set_agent_dimension, tracer

#: Route modules included below (each exposes ``router``, a Powertools ``Router``).
ROUTER_MODULES: tuple[str, ...] = (
    "functions.handlers.routes_jobs",
    "functions.handlers.routes_sessions",
    "functions.handlers.routes_usage",
)
AGENT_PATH = re.compile(r"^/v1/agents/([^/]+)(?:/|$)")
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


@app.get("/v1/health", summary="Health of this function's dependencies")
def health() -> Response[str]:
    runtime = composition.current()
    checks = run_checks(runtime.health_probes())
    healthy = all(value == "ok" for value in checks.values())
    body = HealthResponse(
        status="ok" if healthy else "degraded",
        version=stratus.__version__,
        agent=runtime.settings.agent or None,
        checks=checks,
    )
    return Response(
        status_code=200 if healthy else 503,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(),
    )


@app.get("/v1/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    schema = app.get_openapi_json_schema(title="Stratus API", version=stratus.__version__)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=schema)


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
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    service = composition.current().invoke_service(served_agent(agent))
    event = app.current_event
    tenant, rid = tenant_id(event), request_id(event)
    limit = deadline(app.lambda_context)
    if idempotency_key is not None:
        return service.invoke_idempotent(
            body,
            key=idempotency_key,
            tenant_id=tenant,
            request_id=rid,
            lambda_context=app.lambda_context,
            deadline=limit,
        )
    return service.invoke(body, tenant_id=tenant, request_id=rid, deadline=limit)


def _guard(event: dict[str, Any]) -> StratusError | None:
    """Checks that must run before body validation: size, then the agent."""
    settings = composition.current().settings
    body = event.get("body") or ""
    size = len(base64.b64decode(body)) if event.get("isBase64Encoded") else len(body.encode())
    if size > settings.max_body_bytes:
        return PayloadTooLarge(
            f"the body is {size} bytes; the limit is {settings.max_body_bytes}",
            details={"limit": settings.max_body_bytes},
        )
    match = AGENT_PATH.match(str(event.get("path") or ""))
    if match and match.group(1) != settings.agent:
        return AgentNotFound(
            f"no agent named {match.group(1)!r}", details={"agent": match.group(1)}
        )
    return None


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True
)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    set_agent_dimension(composition.current().settings.agent or "platform")
    problem = _guard(event)
    if problem is not None:
        rid = str((event.get("requestContext") or {}).get("requestId") or "")
        return {
            "statusCode": problem.status,
            "headers": {"Content-Type": content_types.APPLICATION_JSON},
            "body": json.dumps(problem.body(rid)),
            "isBase64Encoded": False,
        }
    return app.resolve(event, context)


# Routers of the other API areas; each module registers its routes on ``router``.
for _module in ROUTER_MODULES:
    app.include_router(importlib.import_module(_module).router)

"""What every HTTP route needs: the caller's tenant, the request id, the deadline.

Routes live in routers (``functions/handlers/routes_*.py``) included by
``functions.handlers.api``; they read the current event through their router and
use these helpers, so tenant scoping and error codes stay identical everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from stratus import composition
from stratus.agents import AgentSpec
from stratus.contracts import MAX_IDEMPOTENCY_KEY_LEN
from stratus.deadline import Deadline, LambdaDeadline
from stratus.errors import AgentNotFound, StratusError, Unauthorized
from stratus.observability import logger
from stratus.release_tags import tag_logger

#: Where the error shape (``stratus.contracts.ErrorResponse``) lives in the OpenAPI document.
ERROR_SCHEMA_REF = "#/components/schemas/ErrorResponse"
#: OpenAPI description of the error responses a route may give.
ERROR_RESPONSES: dict[int, Any] = {
    status: {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
    }
    for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)
}


#: The ``Idempotency-Key`` header, declared with the limits the services enforce.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LEN,
        pattern=r"\S",  # not blank
        description="Repeat a request safely: the same key returns the first answer.",
    ),
]


def request_id(event: APIGatewayProxyEvent) -> str:
    """API Gateway's request id: what clients quote and what the access log shows."""
    return str(event.request_context.request_id or "")


def tenant_id(event: APIGatewayProxyEvent) -> str:
    """The tenant the authorizer resolved; never taken from the body or the path."""
    value = event.request_context.authorizer.get("tenant_id")
    if not value:
        raise Unauthorized("no tenant: the request did not pass the authorizer")
    return str(value)


class Forbidden(StratusError):
    """The caller's key lacks the scope the route requires (``details.missing_scope``)."""

    code = "forbidden"
    status = 403


#: The 403 a scoped route may answer, for its ``responses``.
FORBIDDEN_RESPONSE: dict[int, Any] = {
    403: {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
    }
}


def scopes(event: APIGatewayProxyEvent) -> frozenset[str]:
    """The scopes of the caller's key (the authorizer's space-separated ``scopes``)."""
    return frozenset(str(event.request_context.authorizer.get("scopes") or "").split())


def require_scope(event: APIGatewayProxyEvent, *accepted: str) -> None:
    """Raise ``403 forbidden`` unless the caller's key has one of ``accepted``.

    ``details.missing_scope`` names the first accepted scope (the one to grant). The
    refusal is audited (``request.refused``, buffered: the request's one audit write).
    """
    held = scopes(event)
    if not any(scope in held for scope in accepted):
        who = caller(event)
        composition.current().audit.record(
            who.tenant_id,
            "request.refused",
            actor=who.key_id or "unknown",
            request_id=request_id(event) or None,
            details={
                "reason": "missing_scope",
                "missing_scope": accepted[0],
                "route": f"{event.http_method} {event.resource}",
            },
        )
        raise Forbidden(
            f"this key lacks the scope {accepted[0]!r}",
            details={"missing_scope": accepted[0]},
        )


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the authorizer resolved it (never from the body or the path).

    The authorizer's context keys: ``tenant_id``, ``key_id``, ``scopes`` (space-separated),
    ``role`` and ``customer_id`` (empty when the key has none), ``tier`` and
    ``home_region`` (empty: a context from before tiers, read as ``standard``).
    """

    tenant_id: str
    key_id: str | None
    scopes: frozenset[str]
    role: str | None
    customer_id: str | None
    tier: str = "standard"
    home_region: str | None = None


def caller(event: APIGatewayProxyEvent) -> Caller:
    context = event.request_context.authorizer
    return Caller(
        tenant_id=tenant_id(event),
        key_id=str(context.get("key_id") or "") or None,
        scopes=scopes(event),
        role=str(context.get("role") or "") or None,
        customer_id=str(context.get("customer_id") or "") or None,
        tier=str(context.get("tier") or "") or "standard",
        home_region=str(context.get("home_region") or "") or None,
    )


def deadline(context: Any) -> Deadline | None:
    return LambdaDeadline(context) if context is not None else None


def served_agent(agent: str) -> AgentSpec:
    """The spec of ``agent`` if this function serves it; otherwise ``agent_not_found``."""
    if agent != composition.current().settings.agent:
        raise AgentNotFound(f"no agent named {agent!r}", details={"agent": agent})
    from functions.agents import load_agent

    return load_agent(agent)


def served_release() -> dict[str, str] | None:
    """``{"release", "prompt_version"}`` of the agent this function serves; None for the
    platform function (or an agent that cannot be loaded: its requests report that)."""
    runtime = composition.current()
    if not runtime.settings.agent:
        return None
    from functions.agents import load_agent

    try:
        spec = load_agent(runtime.settings.agent)
        return {"release": runtime.release_for(spec), "prompt_version": spec.prompt_version}
    except Exception as exc:  # the request path answers the misconfiguration in its shape
        logger.warning("the served agent's release is unknown", extra={"error": repr(exc)})
        return None


def tag_served_release() -> None:
    """Every log line of this request carries the served agent's release (cleared per
    request by ``inject_lambda_context(clear_state=True)``)."""
    fields = served_release()
    if fields is not None:
        tag_logger(**fields)

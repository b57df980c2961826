"""Session routes: ``/v1/agents/<agent>/sessions[/<session_id>[/messages]]``.

Thin: tenant, request id and deadline from the event, everything else in
``stratus.sessions``. Model code is imported only when a session service is
first built, so health checks and cold starts stay light.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from functions.handlers.common import (
    ERROR_RESPONSES,
    deadline,
    request_id,
    served_agent,
    tenant_id,
)
from stratus.config import Settings, get_settings
from stratus.contracts import (
    SessionCreated,
    SessionCreateRequest,
    SessionMessageRequest,
    SessionTurnResponse,
    SessionView,
)
from stratus.errors import RouteNotFound, SessionNotFound, ValidationFailed

if TYPE_CHECKING:
    from stratus.sessions import IdempotentMessages, SessionService

router = APIGatewayRouter()

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_services: dict[str, tuple[Settings, SessionService, IdempotentMessages]] = {}


def _ok(model: type, status: int = 200) -> dict[int, Any]:
    return {
        status: {"description": "OK", "content": {"application/json": {"model": model}}},
        **ERROR_RESPONSES,
    }


def _service(agent: str) -> tuple[SessionService, IdempotentMessages]:
    """The session service of the agent this function serves (rebuilt if settings change)."""
    spec = served_agent(agent)
    if spec.sessions is None:
        raise RouteNotFound(f"agent {agent!r} has no sessions", details={"agent": agent})
    settings = get_settings()
    cached = _services.get(agent)
    if cached is None or cached[0] is not settings:
        from stratus.sessions import IdempotentMessages, build_service

        service = build_service(spec, settings)
        cached = (settings, service, IdempotentMessages(service, settings))
        _services[agent] = cached
    return cached[1], cached[2]


def _session_id(value: str) -> str:
    # A malformed id cannot exist: the same answer as any other unknown session.
    if not SESSION_ID.match(value):
        raise SessionNotFound(f"no session {value!r}", details={"session_id": value})
    return value


@router.post(
    "/v1/agents/<agent>/sessions",
    summary="Start a session",
    responses=_ok(SessionCreated, 201),
)
def create_session(agent: str, body: Annotated[SessionCreateRequest, Body()]) -> Response[str]:
    service, _ = _service(agent)
    created = service.create(tenant_id(router.current_event), body.metadata)
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=SessionCreated.model_validate(created).model_dump_json(),
    )


@router.post(
    "/v1/agents/<agent>/sessions/<session_id>/messages",
    summary="Send a message: one turn of the session",
    responses=_ok(SessionTurnResponse),
)
def post_message(
    agent: str,
    session_id: str,
    body: Annotated[SessionMessageRequest, Body()],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    service, idempotent = _service(agent)
    event = router.current_event
    tenant, rid = tenant_id(event), request_id(event)
    sid = _session_id(session_id)
    limit = deadline(router.lambda_context)
    if idempotency_key is not None:
        return idempotent.post(
            tenant,
            sid,
            body.message,
            key=idempotency_key,
            request_id=rid,
            lambda_context=router.lambda_context,
            deadline=limit,
        )
    return service.post_message(tenant, sid, body.message, request_id=rid, deadline=limit)


@router.get(
    "/v1/agents/<agent>/sessions/<session_id>",
    summary="Read a session: messages in order (paginated), turns, usage and cost",
    responses=_ok(SessionView),
)
def get_session(
    agent: str,
    session_id: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=12)] = None,
) -> dict[str, Any]:
    service, _ = _service(agent)
    after = 0
    if cursor is not None:
        if not cursor.isdigit():
            raise ValidationFailed("cursor must be a value returned as next_cursor")
        after = int(cursor)
    tenant = tenant_id(router.current_event)
    return service.get(tenant, _session_id(session_id), limit=limit, after=after)


@router.delete(
    "/v1/agents/<agent>/sessions/<session_id>",
    summary="Delete a session and all its messages",
    responses={204: {"description": "Deleted"}, **ERROR_RESPONSES},
)
def delete_session(agent: str, session_id: str) -> Response[str]:
    service, _ = _service(agent)
    service.delete(tenant_id(router.current_event), _session_id(session_id))
    return Response(status_code=204, content_type=content_types.APPLICATION_JSON, body="")

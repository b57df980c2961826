"""Session routes: ``/v1/agents/<agent>/sessions[/<session_id>[/messages]]``.

Thin: tenant, request id and deadline from the event, the session service of
the served agent from the process's runtime (:mod:`stratus.composition`), the
result mapped to the response. Model code is imported only when a session
service is first built, so health checks and cold starts stay light.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from functions.handlers.common import (
    ERROR_RESPONSES,
    IdempotencyKey,
    deadline,
    request_id,
    require_scope,
    served_agent,
    tenant_id,
)
from functions.handlers.principals import principal
from stratus import composition
from stratus.contracts import (
    SessionCreated,
    SessionCreateRequest,
    SessionMessageRequest,
    SessionTurnResponse,
    SessionView,
)
from stratus.errors import RouteNotFound, SessionNotFound, ValidationFailed

if TYPE_CHECKING:
    from stratus.agents import AgentSpec
    from stratus.sessions import SessionService

router = APIGatewayRouter()

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _ok(model: type, status: int = 200) -> dict[int, Any]:
    return {
        status: {"description": "OK", "content": {"application/json": {"model": model}}},
        **ERROR_RESPONSES,
    }


def _spec(agent: str) -> AgentSpec:
    """The spec of the agent this function serves, if it has sessions (scope ``sessions``)."""
    require_scope(router.current_event, "sessions")
    spec = served_agent(agent)
    if spec.sessions is None:
        raise RouteNotFound(f"agent {agent!r} has no sessions", details={"agent": agent})
    return spec


def _service(agent: str) -> SessionService:
    return composition.current().session_service(_spec(agent))


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
    created = _service(agent).create(tenant_id(router.current_event), body.metadata)
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
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    spec = _spec(agent)
    event = router.current_event
    tenant, rid = tenant_id(event), request_id(event)
    sid = _session_id(session_id)
    limit = deadline(router.lambda_context)
    runtime = composition.current()
    who = principal(event)  # the sender's role and end customer reach the tools
    if idempotency_key is not None:
        return runtime.session_messages(spec).post(
            tenant,
            sid,
            body.message,
            key=idempotency_key,
            request_id=rid,
            lambda_context=router.lambda_context,
            deadline=limit,
            principal=who,
        )
    return runtime.session_service(spec).post_message(
        tenant, sid, body.message, request_id=rid, deadline=limit, principal=who
    )


@router.get(
    "/v1/agents/<agent>/sessions/<session_id>",
    summary="Read a session: messages in order (paginated), turns, usage and cost",
    responses=_ok(SessionView),
)
def get_session(
    agent: str,
    session_id: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]+$")] = None,
) -> dict[str, Any]:
    after = 0
    if cursor is not None:
        # ASCII digits only: str.isdigit() is also True for "²", which int() refuses.
        if not (cursor.isascii() and cursor.isdecimal()):
            raise ValidationFailed("cursor must be a value returned as next_cursor")
        after = int(cursor)
    tenant = tenant_id(router.current_event)
    return _service(agent).get(tenant, _session_id(session_id), limit=limit, after=after)


@router.delete(
    "/v1/agents/<agent>/sessions/<session_id>",
    summary="Delete a session and all its messages",
    responses={204: {"description": "Deleted"}, **ERROR_RESPONSES},
)
def delete_session(agent: str, session_id: str) -> Response[str]:
    _service(agent).delete(tenant_id(router.current_event), _session_id(session_id))
    return Response(status_code=204, body="")  # no body, so no Content-Type either

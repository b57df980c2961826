"""The stream router (issue 17): one function for every route of the WebSocket API.

``$connect`` records the connection (``CONN#``: the caller the authorizer resolved),
``$disconnect`` forgets it; a frame (``invoke``, ``message`` or anything else on
``$default``) is validated (:mod:`stratus.streaming.frames`), the connection's scope
checked (``invoke`` / ``sessions``), its client id claimed (``FRAME#``: a resend gets
the stored final frame, or ``request_in_progress``), and the request handed to the
agent's own function asynchronously (``InvocationType=Event``), which streams the
frames itself. A bad frame is answered here at once with an ``error`` frame; the
connection stays open.

DynamoDB round trips per frame: one (the claim's conditional PutItem); none for a bad
frame; ``$connect`` and ``$disconnect`` one each. The caller comes from the event's
``requestContext.authorizer`` (API Gateway passes it on every event of the connection);
only when it is missing is the ``CONN#`` item read (one more).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stratus.audit import AuditTrail
from stratus.errors import AgentNotFound, AgentNotStreamable, StratusError, Unauthorized
from stratus.observability import logger
from stratus.streaming.frames import (
    SCOPES,
    MessageFrame,
    RequestInProgress,
    StreamForbidden,
    client_id_of,
    error_frame,
    frame_text,
    parse_frame,
)
from stratus.streaming.ports import AgentInvoker, ConnectionGone, ConnectionPoster
from stratus.streaming.store import StreamCaller, StreamStore, frame_key

#: How long a claimed request counts as running before a resend may take it over (the
#: agent function's longest run, plus a margin).
DEFAULT_LEASE_S = 960


class AgentUnavailable(StratusError):
    """The agent's function could not be started (the claim is given back)."""

    code = "agent_unavailable"
    status = 503


class StreamRouter:
    def __init__(
        self,
        store: StreamStore,
        poster: ConnectionPoster,
        invoker: AgentInvoker,
        *,
        functions: dict[str, str],
        audit: AuditTrail | None = None,
        clock: Callable[[], float] = time.time,
        lease_s: int = DEFAULT_LEASE_S,
    ) -> None:
        self._store = store
        self._poster = poster
        self._invoker = invoker
        self._functions = functions
        self._audit = audit
        self._clock = clock
        self._lease_s = lease_s

    def handle(
        self, event: dict[str, Any], *, has_sessions: Callable[[str], bool | None] | None = None
    ) -> int:
        """One WebSocket event; the status API Gateway expects (200: keep the connection)."""
        context = event.get("requestContext") or {}
        route = str(context.get("routeKey") or "$default")
        connection_id = str(context.get("connectionId") or "")
        caller = StreamCaller.from_context(context.get("authorizer"))
        if route == "$connect":
            if caller is None:
                return 401
            self._store.put_connection(connection_id, caller, self._clock())
            logger.info("stream connected", extra={"tenant_id": caller.tenant_id})
            return 200
        if route == "$disconnect":
            self._store.delete_connection(connection_id)
            return 200
        request_id = str(context.get("requestId") or "")
        self.frame(
            connection_id,
            event.get("body"),
            caller,
            request_id,
            base64_encoded=bool(event.get("isBase64Encoded")),
            has_sessions=has_sessions,
        )
        return 200

    def frame(
        self,
        connection_id: str,
        body: Any,
        caller: StreamCaller | None,
        request_id: str,
        *,
        base64_encoded: bool = False,
        has_sessions: Callable[[str], bool | None] | None = None,
    ) -> None:
        client_id: str | None = None
        try:
            text = frame_text(body, base64_encoded)
            client_id = client_id_of(text)
            frame = parse_frame(text)
            if caller is None:
                caller = self._store.get_connection(connection_id)
            if caller is None:
                raise Unauthorized("this connection has no caller; connect again")
            self._check_scope(caller, frame.action, request_id)
            function = self._functions.get(frame.agent)
            if function is None:
                raise AgentNotFound(
                    f"no streamed agent named {frame.agent!r}", details={"agent": frame.agent}
                )
            is_message = isinstance(frame, MessageFrame)
            if is_message and has_sessions is not None and has_sessions(frame.agent) is False:
                raise AgentNotStreamable(
                    f"agent {frame.agent!r} has no sessions: send 'invoke'",
                    details={"agent": frame.agent, "action": "message"},
                )
            key = frame_key(caller.tenant_id, frame.agent, frame.id)
            claim = self._store.claim(key, self._clock(), self._lease_s)
            if claim.status == "done":
                self._post(connection_id, {**(claim.frame or {}), "id": frame.id})
                return
            if claim.status == "running":
                raise RequestInProgress(
                    f"the request {frame.id!r} is still running; its frames go to the "
                    "connection that sent it, and a resend after it finishes gets its result",
                    details={"id": frame.id},
                )
            payload: dict[str, Any] = {
                "connection_id": connection_id,
                "id": frame.id,
                "action": frame.action,
                "agent": frame.agent,
                "caller": caller.context(),
                "request_id": request_id,
            }
            if isinstance(frame, MessageFrame):
                payload.update(session_id=frame.session_id, message=frame.message)
            else:
                payload["input"] = frame.input
            try:
                self._invoker.invoke_async(function, {"stratus_stream": payload})
            except Exception as exc:
                logger.exception("stream: the agent function could not be invoked")
                self._store.release(key)
                raise AgentUnavailable(
                    f"agent {frame.agent!r} could not be started; send the frame again"
                ) from exc
            logger.info(
                "stream request started",
                extra={"tenant_id": caller.tenant_id, "agent": frame.agent, "action": frame.action},
            )
        except StratusError as err:
            logger.info("stream frame rejected", extra={"code": err.code})
            self._post(connection_id, error_frame(client_id, err))

    def _check_scope(self, caller: StreamCaller, action: str, request_id: str) -> None:
        needed = SCOPES[action]
        if needed in caller.scopes:
            return
        if self._audit is not None:
            self._audit.record(
                caller.tenant_id,
                "request.refused",
                actor=caller.key_id or "unknown",
                request_id=request_id or None,
                details={
                    "reason": "missing_scope",
                    "missing_scope": needed,
                    "route": f"WS {action}",
                },
            )
        raise StreamForbidden(
            f"this key lacks the scope {needed!r}", details={"missing_scope": needed}
        )

    def _post(self, connection_id: str, frame: dict[str, Any]) -> None:
        try:
            self._poster.post(connection_id, frame)
        except ConnectionGone:
            logger.info("stream connection gone before its answer")

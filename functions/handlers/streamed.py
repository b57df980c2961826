"""The agent function's streamed request (issue 17): ``{"stratus_stream": {...}}``.

``functions.handlers.api.lambda_handler`` hands such an event (from the stream router,
``InvocationType=Event``) here before the REST path. Thin: parse the request, pick the
served agent's service (``InvokeService.invoke`` for ``invoke``, ``SessionService.
post_message`` for ``message``, exactly as the REST routes call them), and let
``stratus.streaming.StreamedExecution`` post the frames and store the final one.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError

from functions.handlers.common import deadline, served_agent
from stratus import composition
from stratus.contracts import InvokeRequest
from stratus.errors import AgentNotStreamable, StratusError
from stratus.flags import applied
from stratus.observability import logger
from stratus.stream_events import OnEvent, streaming_turn
from stratus.streaming import StreamRequest


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    runtime = composition.current()
    try:
        request = StreamRequest.model_validate(event["stratus_stream"])
    except PydanticValidationError:
        logger.error("a streamed request the router did not build; dropped")
        return {"streamed": False}
    execution = runtime.streamed
    try:
        spec = served_agent(request.agent)
        if request.action == "message" and spec.sessions is None:
            raise AgentNotStreamable(
                f"agent {request.agent!r} has no sessions: send 'invoke'",
                details={"agent": request.agent, "action": "message"},
            )
        if request.action not in ("invoke", "message"):
            raise AgentNotStreamable(f"no streamed action {request.action!r}")
        caller = request.who()
        who = request.principal()
        # 503 agent_disabled (a frame) before anything of the request is written.
        flags = runtime.agent_flags(spec, caller.tenant_id, who)
    except StratusError as err:
        execution.fail(request, err)
        return {"streamed": False}
    limit = deadline(context)

    def invoke(on_event: OnEvent) -> dict[str, Any]:
        body = InvokeRequest(input=request.input if request.input is not None else "")
        return runtime.invoke_service(spec).invoke(
            body,
            tenant_id=caller.tenant_id,
            request_id=request.request_id,
            deadline=limit,
            principal=who,
            on_event=on_event,
        )

    def message(on_event: OnEvent) -> dict[str, Any]:
        with streaming_turn(request.request_id, on_event):
            return runtime.session_service(spec).post_message(
                caller.tenant_id,
                str(request.session_id or ""),
                str(request.message or ""),
                request_id=request.request_id,
                deadline=limit,
                principal=who,
            )

    try:
        with applied(flags):  # the runner's tier, prompt, tools and classifier
            sink = execution.run(request, invoke if request.action == "invoke" else message)
    finally:
        runtime.audit.flush()  # the request's audit events, in one write
    return {"streamed": True, "connection_gone": sink.gone}

"""The streamed execution (issue 17), in the agent's own function.

The router invoked the agent function with ``{"stratus_stream": {...}}``; this runs the
request through the same services as REST (``InvokeService.invoke`` /
``SessionService.post_message``) with ``on_event`` plumbed to the runner, posts every
``delta`` and ``tool`` frame (with the client ``id``) to the connection, and finishes
with one final frame: ``done`` with exactly the fields of the REST answer
(``InvokeResponse`` / ``SessionTurnResponse``), or ``error`` with the REST code.

The final frame is stored under the client id first (``FRAME#``, one PutItem: a resend
after a reconnect gets it), then posted. A connection that is gone (410) stops the
posting, never the run: the request runs to its end, so the budget settles to the real
usage and a session turn commits exactly once (or, on failure, not at all).

DynamoDB round trips added to the REST path: one (the final frame's PutItem). Each
frame is one HTTPS POST to the management API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from stratus.agents import Principal
from stratus.errors import StratusError
from stratus.observability import logger
from stratus.stream_events import OnEvent
from stratus.streaming.frames import error_frame
from stratus.streaming.ports import ConnectionGone, ConnectionPoster
from stratus.streaming.store import StreamCaller, StreamStore, frame_key


class StreamRequest(BaseModel):
    """The router's event for the agent function (``event["stratus_stream"]``)."""

    connection_id: str
    id: str
    action: str
    agent: str
    input: str | dict[str, Any] | None = None
    session_id: str | None = None
    message: str | None = None
    caller: dict[str, Any] = Field(default_factory=dict)
    request_id: str = ""

    def who(self) -> StreamCaller:
        caller = StreamCaller.from_context(self.caller)
        if caller is None:
            raise StratusError("a streamed request without a caller")
        return caller

    def principal(self) -> Principal:
        caller = self.who()
        return Principal(
            key_id=caller.key_id, role=caller.role, customer_id=caller.customer_id, tier=caller.tier
        )


class FrameSink:
    """The frames of one streamed request to its connection; stops posting once gone."""

    def __init__(self, poster: ConnectionPoster, connection_id: str, client_id: str) -> None:
        self._poster = poster
        self.connection_id = connection_id
        self.client_id = client_id
        self.gone = False
        self.posted = 0
        self.skipped = 0

    def send(self, frame: dict[str, Any]) -> None:
        if self.gone:
            self.skipped += 1
            return
        try:
            self._poster.post(self.connection_id, {**frame, "id": self.client_id})
            self.posted += 1
        except ConnectionGone:
            self.gone, self.skipped = True, self.skipped + 1
            logger.info("stream connection gone: the request runs on without posting")
        except Exception:  # a throttled or failed post loses a frame, never the run
            self.skipped += 1
            logger.warning("stream frame could not be posted", exc_info=True)

    def event(self, frame: dict[str, Any]) -> None:
        """``on_event`` for the runner: ``delta`` and ``tool`` frames."""
        self.send(frame)


Work = Callable[[OnEvent], dict[str, Any]]


class StreamedExecution:
    def __init__(
        self,
        store: StreamStore,
        poster: ConnectionPoster,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._poster = poster
        self._clock = clock

    def sink(self, request: StreamRequest) -> FrameSink:
        return FrameSink(self._poster, request.connection_id, request.id)

    def run(self, request: StreamRequest, work: Work, sink: FrameSink | None = None) -> FrameSink:
        """Run ``work(on_event)`` (the REST answer), store and post the final frame."""
        sink = sink or self.sink(request)
        final: dict[str, Any]
        try:
            answer = work(sink.event)
            final = {"type": "done", "id": request.id, **answer}
        except StratusError as err:
            if err.status >= 500:
                logger.error("streamed request failed", extra={"code": err.code})
            final = error_frame(request.id, err)
        except Exception:
            logger.exception("streamed request failed")
            final = error_frame(request.id, StratusError("an internal error occurred"))
        self.finish(request, final)
        sink.send(final)
        logger.info(
            "streamed request finished",
            extra={
                "type": final["type"],
                "frames_posted": sink.posted,
                "frames_skipped": sink.skipped,
                "connection_gone": sink.gone,
            },
        )
        return sink

    def fail(self, request: StreamRequest, error: StratusError) -> None:
        """Answer a request that cannot run here (wrong agent) with its error frame."""
        final = error_frame(request.id, error)
        self.finish(request, final)
        self.sink(request).send(final)

    def finish(self, request: StreamRequest, final: dict[str, Any]) -> None:
        caller = StreamCaller.from_context(request.caller)
        if caller is None:
            return
        key = frame_key(caller.tenant_id, request.agent, request.id)
        try:
            self._store.finish(key, final, self._clock())
        except Exception:  # the client still gets the frame; a resend would run again
            logger.exception("stream: the final frame could not be stored")

"""What a streamed run tells its caller (issue 17), before the caller adds the client ``id``.

``on_event(frame)`` receives ``{"type": "delta", "text"}`` for model text and
``{"type": "tool", "name", "status"}`` around each tool call: ``started`` before it,
then ``ok``, ``error`` (unknown tool, invalid arguments, the tool failed) or ``denied``
(the caller's role may not use it). Pure: no I/O, importable from the runner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

OnEvent = Callable[[dict[str, Any]], None]

#: What the runner answers the model for a tool the caller's role may not use.
_DENIED = "tool_not_permitted"


def tool_status(result: str | None) -> str:
    """The status of a finished tool call from what the runner answered the model."""
    if result is None:
        return "started"
    try:
        value = json.loads(result)
    except ValueError:
        return "ok"
    if isinstance(value, dict) and set(value) <= {"error", "message", "details"}:
        error = value.get("error")
        if error == _DENIED:
            return "denied"
        if isinstance(error, str):
            return "error"
    return "ok"


def tool_event(on_event: OnEvent | None, name: str, result: str | None) -> None:
    """``started`` (``result`` None) or the finished call's status, when streaming."""
    if on_event is not None:
        on_event({"type": "tool", "name": name, "status": tool_status(result)})


#: The session turn that streams in this context: (its request id, where its events go).
_turn_stream: ContextVar[tuple[str, OnEvent] | None] = ContextVar(
    "stratus_turn_stream", default=None
)


@contextmanager
def streaming_turn(request_id: str, on_event: OnEvent) -> Iterator[None]:
    """Stream the session turn of ``request_id`` run inside this block (and only it: a
    queued turn of another message that this caller runs first is not streamed)."""
    token = _turn_stream.set((request_id, on_event))
    try:
        yield
    finally:
        _turn_stream.reset(token)


def turn_events(request_id: str) -> dict[str, Any]:
    """``{"on_event": ...}`` for the runner when the turn of ``request_id`` streams."""
    current = _turn_stream.get()
    if current is None or current[0] != request_id:
        return {}
    return {"on_event": current[1]}

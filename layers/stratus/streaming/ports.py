"""The streaming ports besides the store: posting frames, invoking an agent function.

* :class:`ConnectionPoster`: ``post(connection_id, frame)`` through the WebSocket
  management API (``POST @connections/{id}``); a connection that is gone (410
  ``GoneException``) raises :class:`ConnectionGone`. Adapter:
  :class:`stratus.streaming.aws_adapters.ManagementApiPoster`; fake: :class:`MemoryPoster`.
* :class:`AgentInvoker`: ``invoke_async(function, event)``: the router hands a validated,
  claimed request to the agent's own function (``InvocationType=Event``). Adapter:
  :class:`stratus.streaming.aws_adapters.LambdaAgentInvoker`; fake: :class:`MemoryInvoker`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class ConnectionGone(Exception):
    """The WebSocket connection is closed (the management API's 410 GoneException)."""


class ConnectionPoster(Protocol):
    def post(self, connection_id: str, frame: dict[str, Any]) -> None: ...


class AgentInvoker(Protocol):
    def invoke_async(self, function: str, event: dict[str, Any]) -> None: ...


@dataclass
class MemoryPoster:
    """Frames per connection, in order; ``gone`` connections (or ones past ``gone_after``
    posts) raise :class:`ConnectionGone` like the management API's 410."""

    frames: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    #: connection id -> how many posts succeed before it is gone (a client that leaves).
    gone_after: dict[str, int] = field(default_factory=dict)
    #: connection id -> how many ``delta`` frames it takes before it is gone.
    gone_after_deltas: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def post(self, connection_id: str, frame: dict[str, Any]) -> None:
        with self._lock:
            self.attempts += 1
            sent = self.frames.setdefault(connection_id, [])
            limit = self.gone_after.get(connection_id)
            deltas = self.gone_after_deltas.get(connection_id)
            if (limit is not None and len(sent) >= limit) or (
                deltas is not None and sum(f.get("type") == "delta" for f in sent) >= deltas
            ):
                self.gone.add(connection_id)
            if connection_id in self.gone:
                raise ConnectionGone(connection_id)
            sent.append(frame)


@dataclass
class MemoryInvoker:
    """Records async invocations; ``deliver`` (when set) runs each one, like Lambda would."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deliver: Callable[[str, dict[str, Any]], Any] | None = None
    fail: bool = False

    def invoke_async(self, function: str, event: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("the agent function could not be invoked")
        self.calls.append((function, event))
        if self.deliver is not None:
            self.deliver(function, event)

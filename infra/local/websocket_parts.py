"""The local WebSocket API's parts: its throttle, its connections, route selection, the
management API's errors (``infra.local.websocket_gateway`` serves them)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import ServerConnection

from infra.topology.streaming import (
    CONNECT_ROUTE,
    DEFAULT_ROUTE,
    DISCONNECT_ROUTE,
    WEBSOCKET_ROUTES,
)


class TokenBucket:
    """API Gateway's stage throttle: ``rate`` tokens a second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


@dataclass
class Connection:
    """One open WebSocket connection and what API Gateway knows of it."""

    connection_id: str
    authorizer: dict[str, Any]
    source_ip: str
    user_agent: str | None
    connected_at_ms: int
    socket: ServerConnection | None = None
    last_active_ms: int = 0
    closed: bool = False
    #: Set once the handshake is done and frames can flow (created on the server's loop).
    ready: asyncio.Event | None = None


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def request_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def select_route(body: str, routes: Sequence[str] = WEBSOCKET_ROUTES) -> str:
    """``$request.body.action``: the route named by the body's ``action``, else ``$default``."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return DEFAULT_ROUTE
    action = parsed.get("action") if isinstance(parsed, dict) else None
    special = (CONNECT_ROUTE, DISCONNECT_ROUTE, DEFAULT_ROUTE)
    if isinstance(action, str) and action in routes and action not in special:
        return action
    return DEFAULT_ROUTE


def frame_id(body: str) -> Any:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed.get("id") if isinstance(parsed, dict) else None


def aws_error(status: int, kind: str, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": kind}
    return status, headers, json.dumps({"message": message}).encode()


def gone(connection_id: str) -> tuple[int, dict[str, str], bytes]:
    return aws_error(410, "GoneException", f"no connection {connection_id}")

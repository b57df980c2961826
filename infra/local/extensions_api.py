"""Lambda's Extensions API on loopback, for the tests and the bench of internal extensions.

It serves the two calls an internal extension makes (``stratus.after_response``):
``POST /2020-01-01/extension/register`` answers an identifier in the
``Lambda-Extension-Identifier`` header; ``GET /2020-01-01/extension/event/next``
blocks until :meth:`ExtensionsApiServer.invoke` hands out an ``INVOKE`` event, as
Lambda does. The server records when each extension asks for its next event: that
is when Lambda would freeze the environment (:meth:`wait_next`), the end of an
invoke's settle window.

A registration after the first :meth:`invoke` is refused (403), as Lambda refuses
one after the init phase; :meth:`refuse` makes it refuse every registration.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from infra.local.loopback import LoopbackServer

PREFIX = "/2020-01-01/extension"


def _send(
    request: BaseHTTPRequestHandler,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(data)


class ExtensionsApiServer:
    """The Extensions API of one execution environment with one internal extension."""

    def __init__(self) -> None:
        self._server = LoopbackServer("extensions-api", self._handle)
        self._cond = threading.Condition()
        self._ids: list[str] = []
        self._events: list[dict[str, Any]] = []  # handed out in order, one per next call
        self._next_at: list[float] = []  # perf_counter of each next call
        self._invoked = self._refusing = self._closing = False

    @property
    def address(self) -> str:
        """What Lambda puts in ``AWS_LAMBDA_RUNTIME_API``: host and port."""
        return f"127.0.0.1:{self._server.port}"

    def __enter__(self) -> ExtensionsApiServer:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._cond:  # release the pending event/next, as a shutdown of Lambda does
            self._closing = True
            self._cond.notify_all()
        self._server.stop()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        # Headers and body go out in two writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (tens of ms) and every event is late.
        request.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if request.command == "POST" and request.path == f"{PREFIX}/register":
            self._register(request)
        elif request.command == "GET" and request.path == f"{PREFIX}/event/next":
            self._next(request)
        else:
            _send(request, 404, {"errorType": "NotFound"})

    def _register(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"{}")
        name = request.headers.get("Lambda-Extension-Name") or ""
        ident = str(uuid.uuid4())
        with self._cond:
            refused = self._refusing or self._invoked or not name
            refused = refused or "INVOKE" not in body.get("events", [])
            if not refused:
                self._ids.append(ident)
        if refused:
            _send(request, 403, {"errorType": "Extension.RegistrationRefused"})
            return
        headers = {"Lambda-Extension-Identifier": ident}
        _send(request, 200, {"functionName": "stratus", "functionVersion": "1"}, headers)

    def _next(self, request: BaseHTTPRequestHandler) -> None:
        with self._cond:
            if request.headers.get("Lambda-Extension-Identifier") not in self._ids:
                event = None
            else:
                self._next_at.append(time.perf_counter())
                self._cond.notify_all()
                mine = len(self._next_at) - 1  # the index of the event this call gets
                self._cond.wait_for(lambda: len(self._events) > mine or self._closing)
                if self._closing:  # no answer: the connection closes, as when Lambda stops
                    request.close_connection = True
                    return
                event = self._events[mine]
        if event is None:
            _send(request, 403, {"errorType": "Extension.Unknown"})
        else:
            _send(request, 200, event)

    def refuse(self) -> None:
        """Refuse every registration from now on."""
        with self._cond:
            self._refusing = True

    @property
    def registered(self) -> int:
        return len(self._ids)

    def invoke(self, request_id: str, *, timeout_s: float = 30.0) -> None:
        """Hand the extension an ``INVOKE`` event (its pending or next ``event/next``)."""
        deadline_ms = int((time.time() + timeout_s) * 1000)
        with self._cond:
            self._invoked = True
            self._events.append({
                "eventType": "INVOKE",
                "deadlineMs": deadline_ms,
                "requestId": request_id,
                "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:stratus",
                "tracing": {"type": "X-Amzn-Trace-Id", "value": ""},
            })  # fmt: skip
            self._cond.notify_all()

    def wait_next(self, timeout: float = 10.0) -> float | None:
        """Wait until the extension asked for the event after the last one handed out:
        the ``perf_counter`` of that call (when Lambda would freeze), or None on timeout."""
        with self._cond:
            wanted = len(self._events) + 1  # the registration's first next, then one per event
            if not self._cond.wait_for(lambda: len(self._next_at) >= wanted, timeout=timeout):
                return None
            return self._next_at[wanted - 1]

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait for the extension's first ``event/next`` (the end of its init)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._next_at) >= 1, timeout=timeout)

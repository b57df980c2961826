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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2020-01-01/extension"


class _State:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ids: list[str] = []
        self.events: list[dict[str, Any]] = []  # handed out in order, one per next call
        self.next_calls = 0  # next calls received so far
        self.next_at: list[float] = []  # perf_counter of each next call
        self.invoked = False
        self.refusing = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (tens of ms) and every event is late.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        state = self.server.state
        if self.path != f"{PREFIX}/register":
            self._send(404, {"errorType": "NotFound"})
            return
        name = self.headers.get("Lambda-Extension-Name") or ""
        with state.cond:
            refused = state.refusing or state.invoked or not name
            if not refused:
                ident = str(uuid.uuid4())
                state.ids.append(ident)
        if refused or "INVOKE" not in body.get("events", []):
            self._send(403, {"errorType": "Extension.RegistrationRefused"})
            return
        self._send(200, {"functionName": "stratus", "functionVersion": "1"}, {
            "Lambda-Extension-Identifier": ident,
        })  # fmt: skip

    def do_GET(self) -> None:
        state = self.server.state
        if self.path != f"{PREFIX}/event/next":
            self._send(404, {"errorType": "NotFound"})
            return
        if self.headers.get("Lambda-Extension-Identifier") not in state.ids:
            self._send(403, {"errorType": "Extension.Unknown"})
            return
        with state.cond:
            state.next_calls += 1
            state.next_at.append(time.perf_counter())
            state.cond.notify_all()
            mine = state.next_calls - 1  # the index of the event this call gets
            state.cond.wait_for(lambda: len(state.events) > mine or self.server.closing)
            if self.server.closing:
                return
            event = state.events[mine]
        self._send(200, event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = _State()
        self.closing = False


class ExtensionsApiServer:
    """The Extensions API of one execution environment with one internal extension."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """What Lambda puts in ``AWS_LAMBDA_RUNTIME_API``: host and port."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def __enter__(self) -> ExtensionsApiServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        state = self._server.state
        with state.cond:
            self._server.closing = True
            state.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def refuse(self) -> None:
        """Refuse every registration from now on."""
        with self._server.state.cond:
            self._server.state.refusing = True

    @property
    def registered(self) -> int:
        return len(self._server.state.ids)

    def invoke(self, request_id: str, *, timeout_s: float = 30.0) -> None:
        """Hand the extension an ``INVOKE`` event (its pending or next ``event/next``)."""
        state = self._server.state
        deadline_ms = int((time.time() + timeout_s) * 1000)
        with state.cond:
            state.invoked = True
            state.events.append({
                "eventType": "INVOKE",
                "deadlineMs": deadline_ms,
                "requestId": request_id,
                "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:stratus",
                "tracing": {"type": "X-Amzn-Trace-Id", "value": ""},
            })  # fmt: skip
            state.cond.notify_all()

    def wait_next(self, timeout: float = 10.0) -> float | None:
        """Wait until the extension asked for the event after the last one handed out:
        the ``perf_counter`` of that call (when Lambda would freeze), or None on timeout."""
        state = self._server.state
        with state.cond:
            wanted = len(state.events) + 1  # the registration's first next, then one per event
            if not state.cond.wait_for(lambda: state.next_calls >= wanted, timeout=timeout):
                return None
            return state.next_at[wanted - 1]

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait for the extension's first ``event/next`` (the end of its init)."""
        state = self._server.state
        with state.cond:
            return state.cond.wait_for(lambda: state.next_calls >= 1, timeout=timeout)

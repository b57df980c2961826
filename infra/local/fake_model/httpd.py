"""The HTTP layer of the fake model: a stdlib threading server that stops cleanly.

It reads requests and writes JSON or server-sent events; what to answer is the
owning server's business (:class:`RequestSink`, i.e. ``FakeModelServer``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from infra.local.fake_model.markers import FAKE_HEADER
from infra.local.fake_model.validation import BadRequest

logger = logging.getLogger("stratus.fake_model")

_MAX_BODY_BYTES = 32 * 1024 * 1024


class RequestSink(Protocol):
    """What the HTTP layer hands each request to (with its body already read)."""

    def handle(self, http: FakeHandler, method: str, path: str, raw: bytes) -> None: ...


class FakeHTTPServer(ThreadingHTTPServer):
    """The stdlib server plus bookkeeping so :meth:`FakeModelServer.stop` is clean.

    Keep-alive connections (the ``openai`` client pools them) would otherwise
    keep handler threads blocked on reads after shutdown; the server tracks
    open connections and their threads so ``stop`` can close and join them.
    """

    daemon_threads = True
    block_on_close = False  # we join our own threads, with a timeout

    def __init__(self, address: tuple[str, int], fake: RequestSink) -> None:
        self.fake = fake
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, FakeHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host name (getfqdn), which can
        # stall for seconds in a sandbox without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: socket.socket) -> None:
        with self._conn_lock:
            self._connections[connection] = threading.current_thread()

    def untrack(self, connection: socket.socket) -> None:
        with self._conn_lock:
            self._connections.pop(connection, None)

    def close_connections(self, timeout: float) -> None:
        with self._conn_lock:
            open_now = list(self._connections.items())
        for connection, _ in open_now:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_now:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, stop()) are routine here, not errors.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            logger.debug("connection from %s ended: %s", client_address, error)
        else:
            logger.exception("fake model server: unhandled error for %s", client_address)


class FakeHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into calls on the owning server (a :class:`RequestSink`)."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server_version = "StratusFakeModel/1.0"
    timeout = 120  # idle keep-alive connections eventually free their thread

    @property
    def _http(self) -> FakeHTTPServer:
        return cast(FakeHTTPServer, self.server)

    @property
    def fake(self) -> RequestSink:
        return self._http.fake

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and delayed ACKs add ~40 ms to every loopback request.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._http.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._http.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # FakeModelServer logs one richer line per request instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            try:
                # Always read the whole body first so a keep-alive connection
                # stays in step whatever the answer is.
                raw = self.read_body()
            except BadRequest as error:
                self.close_connection = True
                self.send_error_json(error.status, error.message)
                return
            self.fake.handle(self, method, urlsplit(self.path).path, raw)
        except OSError as error:
            # The client went away (e.g. it timed out during a delay fault).
            logger.debug("client %s disconnected: %s", self.client_address, error)
            self.close_connection = True

    # -- reading

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise BadRequest("Invalid Content-Length header.") from None
        if size < 0:
            raise BadRequest("Invalid Content-Length header.")
        if size > _MAX_BODY_BYTES:
            raise BadRequest("The request body is too large.", status=413)
        return self.rfile.read(size)

    def api_key(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, key = header.partition(" ")
        key = key.strip()
        return key if scheme.lower() == "bearer" and key else None

    def client_gone(self) -> bool:
        """Whether the client has closed the connection (checked after a delay)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- writing

    def _common_headers(self, extra: dict[str, str] | None) -> None:
        self.send_header(FAKE_HEADER, "true")
        for name, value in (extra or {}).items():
            self.send_header(name, value)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(headers)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_error_json(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if error_type is None:
            error_type = "server_error" if status >= 500 else "invalid_request_error"
        error = {"message": message, "type": error_type, "param": param, "code": code}
        self.send_json(status, {"error": error}, headers)

    def send_stream(self, events: Iterable[Any], headers: dict[str, str] | None = None) -> None:
        """Server-sent events in chunked encoding, so the connection stays reusable."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers(headers)
        self.end_headers()
        for event in events:
            line = "data: " + (event if isinstance(event, str) else json.dumps(event)) + "\n\n"
            data = line.encode("utf-8")
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

"""A chat-completions endpoint on the loopback interface, for the init phase's priming calls.

Priming (``stratus.snapstart.warm_sdk``) sends the agent's first SDK call at init
so the first real request finds every lazy path built. Answering it over a real
socket, rather than an in-process mock transport, builds what the HTTP stack
builds on its first exchange too: the connection pool, the socket stream, the
HTTP/1.1 parser and the response stream. Nothing leaves the machine, no key is
checked and the connection is closed before the call returns, so a SnapStart
snapshot holds no socket.

It serves one connection, answers each request in turn with the JSON the
``answer`` callable returns for the request's body, and stops; it understands
exactly what the ``openai`` client sends (a ``Content-Length`` body, keep-alive),
nothing more.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any

#: How long the endpoint waits for the client at each step before it gives up.
TIMEOUT_S = 5.0
#: The largest request it reads (the agent's prompt, tools and schema).
MAX_REQUEST_BYTES = 4 * 1024 * 1024

Answer = Callable[[dict[str, Any]], dict[str, Any]]


class PrimingModel:
    """``with PrimingModel(answer) as endpoint:`` then send to ``endpoint.base_url``."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(TIMEOUT_S)
        self.port: int = self._server.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        #: Requests answered (the priming checks it reached the endpoint).
        self.answered = 0
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="stratus-priming", daemon=True)

    def __enter__(self) -> PrimingModel:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Wake the serving thread wherever it waits (accept, or recv on a connection
        # the client left open): closing a socket does not interrupt a blocked call.
        for sock in (self._server, self._conn):
            if sock is not None:
                with suppress(OSError):  # not connected, or closed already
                    sock.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(TIMEOUT_S)

    def _serve(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:  # closed before the client came
            return
        self._conn = conn
        with conn:
            conn.settimeout(TIMEOUT_S)
            pending = b""
            while True:
                try:
                    request, pending = _read_request(conn, pending)
                except (OSError, ValueError):
                    return
                if request is None:
                    return  # the client closed its connection
                body = json.dumps(self._answer(request)).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + b"content-length: %d\r\n\r\n" % len(body)
                    + body
                )
                self.answered += 1


def _read_request(conn: socket.socket, pending: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """One request's JSON body, and what was read past it; None once the peer closed."""
    while b"\r\n\r\n" not in pending:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        pending += chunk
        if len(pending) > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
    head, _, rest = pending.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length > MAX_REQUEST_BYTES:
        raise ValueError("request too large")
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    body, pending = rest[:length], rest[length:]
    return (json.loads(body) if body else {}), pending

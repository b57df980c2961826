"""A small threaded HTTP server on loopback that hands every request to one callable.

The local cloud's fronts (the AWS endpoint, the API Gateway) differ only in what
they do with a request; starting, stopping and addressing them is shared here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

RequestHandler = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog of 5 resets bursts of concurrent
    # clients (load and budget tests send 50 at once); API Gateway never does.
    request_queue_size = 128


class LoopbackServer:
    """Serves HTTP/1.1 on ``host:port`` (port 0 = a free one) on a daemon thread."""

    def __init__(
        self,
        name: str,
        handle: RequestHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: logging.Logger | None = None,
    ) -> None:
        self.name = name
        quiet = log or logging.getLogger(f"stratus.local.{name}")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                quiet.debug("%s - %s", self.address_string(), format % args)

            def _any(self) -> None:
                handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any

        self._server = _Server((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

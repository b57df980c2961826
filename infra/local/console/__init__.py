"""The local console: a web page of the running local cloud (``stratus dev``).

Served on its own port (``--console-port``, default 8783; 0 = a free one) from plain
files in ``static/`` (HTML, CSS, vanilla JS that draws its charts as inline SVG: no
build step, no network), and JSON endpoints the page polls
(:class:`infra.local.console.data.ConsoleData`):

=============================== ==============================================
``GET /api/status``             the cloud, the model (offline warning)
``GET /api/agents``             per agent: calls, cost today, 7-day cost, and per-minute
                                requests, errors, latency, cost per task
``GET /api/budgets``            budget burn per scope today (global, agent, tenant)
``GET /api/jobs``               jobs with steps, status, cost, correlation id
``GET /api/sessions``           sessions with turns and cost
``GET /api/dlq``                DLQ messages with their ``stratus_reason``
``GET /api/logs?correlation_id=`` recent log lines, filtered
=============================== ==============================================

Errors answer ``{"error": {"code", "message"}}``: 404 ``not_found``, 400 with the
parameter's code, 503 ``starting`` before the cloud is up, 502 ``backend_error`` when
moto does not answer.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infra.local.console.data import BadRequest, ConsoleData

log = logging.getLogger("stratus.local.console")
STATIC = Path(__file__).resolve().parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
ENDPOINTS = ("status", "agents", "budgets", "jobs", "sessions", "dlq", "logs")


class ConsoleServer:
    """The console's HTTP server on loopback, serving from its own thread."""

    def __init__(self, cloud: Any, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.data = ConsoleData(cloud)
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the console is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> ConsoleServer:
        data = self.data

        class Handler(_Handler):
            console = data

        try:
            httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        except OSError as exc:
            raise RuntimeError(
                f"the console cannot listen on {self._host}:{self._port} ({exc}); "
                "give another --console-port (0 = any free port)"
            ) from exc
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="stratus-console", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None


def start_console(cloud: Any, port: int = 0) -> ConsoleServer:
    return ConsoleServer(cloud, port=port).start()


class _Handler(BaseHTTPRequestHandler):
    console: ConsoleData
    server_version = "stratus-console"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("console: " + format, *args)

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path
        if path in ("/", "/index.html"):
            self._file("index.html")
        elif path.startswith("/static/"):
            self._file(path.removeprefix("/static/"))
        elif path.startswith("/api/"):
            self._api(path.removeprefix("/api/"), urllib.parse.parse_qs(parsed.query))
        elif path == "/favicon.ico":
            self._file("favicon.svg")
        else:
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no page {path}")

    def _file(self, name: str) -> None:
        known = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        target = known.get(name)
        if target is None:
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no file {name}")
            return
        body = target.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", TYPES.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def _api(self, name: str, query: dict[str, list[str]]) -> None:
        if name not in ENDPOINTS:
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no endpoint /api/{name}")
            return
        try:
            if name == "logs":
                body = self.console.logs(
                    correlation_id=_one(query, "correlation_id"),
                    limit=_int(query, "limit", 200),
                    after=_int(query, "after", 0),
                    platform=_one(query, "platform") not in ("0", "false", "no"),
                )
            else:
                body = self.console.cached(name, getattr(self.console, name))
        except BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, exc.code, str(exc))
            return
        except LookupError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "starting", str(exc))
            return
        except Exception as exc:  # moto busy or stopping: say so, never drop the connection
            log.warning("console /api/%s failed: %s", name, exc)
            self._error(HTTPStatus.BAD_GATEWAY, "backend_error", f"{type(exc).__name__}: {exc}")
            return
        self._json(HTTPStatus.OK, body)

    def _json(self, status: HTTPStatus, body: Any) -> None:
        raw = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: HTTPStatus, code: str, message: str) -> None:
        self._json(status, {"error": {"code": code, "message": message}})


def _one(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name) or [""]
    return values[0].strip()


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = _one(query, name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"invalid_{name}", f"{name} must be an integer") from None


__all__ = ["ConsoleServer", "start_console"]

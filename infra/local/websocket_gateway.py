"""The local WebSocket API (issue 17): API Gateway v2 WebSocket events to the real handlers.

It serves the stack's WebSocket routes (``infra.topology.streaming``) with the
``websockets`` library on its own port, as API Gateway does:

* **handshake**: the ``$connect`` REQUEST-authorizer event (headers, query string,
  ``methodArn``, ``requestContext`` with ``connectionId``, ``routeKey``, ``eventType``,
  ``domainName``, ``stage``, ``apiId``) goes to ``stream_authorizer`` through the local
  Lambda runtime; a Deny is refused ``403``, an error or a malformed answer ``401``
  (always an HTTP answer, never a dropped socket). Then ``$connect`` runs on the router
  with the authorizer's context; a non-2xx answer refuses the handshake with that status.
* **messages**: route selection on the JSON body's ``action`` (not JSON, not an object, or
  no such route: ``$default``); the MESSAGE event (body as a string, the connection's
  authorizer context) goes to the router. A router failure is answered with API
  Gateway's ``{"message": "Internal server error", ...}``; the connection stays open.
  Messages over 128 KiB close the connection (1009), as API Gateway does; frames up to
  that reach the router, which answers those over 32 KiB ``payload_too_large``.
* **close**: ``$disconnect`` on the router (in the background).
* **the management API** (``@connections``): :meth:`LocalWebSocketGateway.manage`, served
  by the local AWS front under ``/@ws/<stage>`` (``STRATUS_WS_CALLBACK_URL``): ``POST``
  sends a frame (returns once it is written), ``GET`` describes, ``DELETE`` closes; an
  unknown or closed id is ``410 GoneException``.
* **throttling**: one token bucket for the stage (the REST stage's rate and burst):
  a connect over it is refused ``429``, a message over it answered with an ``error``
  frame ``throttled``. **Access log**: one JSON line per connect, message and disconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from infra.local.aws_front import InvokeResultLike
from infra.local.lambda_types import TooManyRequests
from infra.local.websocket_parts import (
    Connection,
    TokenBucket,
    aws_error,
    frame_id,
    gone,
    iso,
    now_ms,
    request_time,
    select_route,
)
from infra.topology.streaming import (
    CONNECT_ROUTE,
    DISCONNECT_ROUTE,
    MAX_MESSAGE_BYTES,
    WEBSOCKET_ROUTES,
)

log = logging.getLogger("stratus.local.api")

DEFAULT_WS_PORT = 8782
API_ID = "local-ws"
ACCOUNT_ID = "000000000000"
REGION = "us-east-1"
#: Seconds a management ``POST`` waits for its frame to be written.
SEND_TIMEOUT_S = 10.0

Invoker = Callable[[str, Any], InvokeResultLike]


class LocalWebSocketGateway:
    """A WebSocket API stage on loopback, backed by the local Lambda runtime."""

    def __init__(
        self,
        invoke: Invoker,
        *,
        router: str,
        authorizer: str,
        stage: str = "local",
        host: str = "127.0.0.1",
        port: int = DEFAULT_WS_PORT,
        throttle_rate: float = 10_000,
        throttle_burst: int = 5_000,
        routes: Sequence[str] = WEBSOCKET_ROUTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        invoke_workers: int = 32,
    ) -> None:
        self._invoke = invoke
        self._router = router
        self._authorizer = authorizer
        self.stage = stage
        self._host = host
        self._requested_port = port
        self.routes = tuple(routes)
        self._max_message_bytes = max_message_bytes
        self.bucket = TokenBucket(throttle_rate, throttle_burst)
        self._pool = ThreadPoolExecutor(max_workers=invoke_workers, thread_name_prefix="ws-invoke")
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    def start(self) -> LocalWebSocketGateway:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(self._serve())
                sock = next(iter(self._server.sockets))
                self._port = int(sock.getsockname()[1])
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="websocket-gateway", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> Server:
        return await serve(
            self._session,
            self._host,
            self._requested_port,
            process_request=self._handshake,
            max_size=self._max_message_bytes,
            # API Gateway keeps idle connections 10 minutes; pings keep this one honest.
            ping_interval=20,
            server_header=None,
        )

    def stop(self) -> None:
        """Close every connection and the listening socket; safe to call twice."""
        loop, server = self._loop, self._server
        if loop is not None and server is not None and loop.is_running():

            async def close() -> None:
                server.close()
                await server.wait_closed()

            try:
                asyncio.run_coroutine_threadsafe(close(), loop).result(10)
            except Exception:  # stopping anyway
                log.exception("websocket gateway did not close cleanly")
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if loop is not None and not loop.is_running() and not loop.is_closed():
            loop.close()
        self._server = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LocalWebSocketGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connection_ids(self) -> list[str]:
        with self._lock:
            return sorted(cid for cid, c in self._connections.items() if not c.closed)

    # -- events -------------------------------------------------------------------------

    def _context(self, conn: Connection, route: str, event_type: str) -> dict[str, Any]:
        now = now_ms()
        context: dict[str, Any] = {
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": conn.connected_at_ms,
            "requestTimeEpoch": now,
            "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
            "requestId": str(uuid.uuid4()),
            "domainName": f"127.0.0.1:{self._port}",
            "connectionId": conn.connection_id,
            "apiId": API_ID,
        }
        if conn.authorizer:
            context["authorizer"] = dict(conn.authorizer)
        return context

    def _call(self, function: str, event: dict[str, Any]) -> InvokeResultLike:
        return self._invoke(function, event)

    async def _run(self, function: str, event: dict[str, Any]) -> InvokeResultLike:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, function, event)

    def _access(
        self, conn: Connection | None, context: dict[str, Any], status: int, **extra: Any
    ) -> None:
        line = {
            "requestId": context.get("requestId"),
            "connectionId": context.get("connectionId"),
            "eventType": context.get("eventType"),
            "routeKey": context.get("routeKey"),
            "status": status,
            "ip": context.get("identity", {}).get("sourceIp"),
            "tenantId": (conn.authorizer if conn else {}).get("tenant_id"),
            **extra,
        }
        log.info("websocket %s", json.dumps(line, separators=(",", ":"), default=str))

    # -- the handshake ($connect) ------------------------------------------------------

    async def _handshake(self, socket: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        headers = {k: v for k, v in request.headers.raw_items()}
        multi_headers: dict[str, list[str]] = {}
        for key, value in request.headers.raw_items():
            multi_headers.setdefault(key, []).append(value)
        multi_query: dict[str, list[str]] = {}
        for key, value in parse_qsl(url.query, keep_blank_values=True):
            multi_query.setdefault(key, []).append(value)
        remote = socket.remote_address
        conn = Connection(
            connection_id=secrets.token_urlsafe(9) + "=",
            authorizer={},
            source_ip=str(remote[0]) if remote else "127.0.0.1",
            user_agent=request.headers.get("User-Agent"),
            connected_at_ms=now_ms(),
        )
        context = self._context(conn, CONNECT_ROUTE, "CONNECT")
        if not self.bucket.take():
            self._access(conn, context, 429)
            return self._refuse(
                socket, HTTPStatus.TOO_MANY_REQUESTS, "throttled", "Too Many Requests"
            )
        auth_event = {
            "type": "REQUEST",
            "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{API_ID}/{self.stage}/"
            f"{CONNECT_ROUTE}",
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "stageVariables": {},
            "requestContext": context,
        }
        try:
            result = await self._run(self._authorizer, auth_event)
        except TooManyRequests:
            self._access(conn, context, 429)
            return self._refuse(
                socket, HTTPStatus.TOO_MANY_REQUESTS, "throttled", "Too Many Requests"
            )
        payload = result.payload if isinstance(result.payload, dict) else None
        if result.error is not None or payload is None or "policyDocument" not in payload:
            self._access(
                conn, context, 401, authorizerError=(result.error or {}).get("errorMessage")
            )
            return self._refuse(socket, HTTPStatus.UNAUTHORIZED, "unauthorized", "Unauthorized")
        statements = (payload.get("policyDocument") or {}).get("Statement") or []
        if not statements or not all(s.get("Effect") == "Allow" for s in statements):
            self._access(conn, context, 403)
            return self._refuse(socket, HTTPStatus.FORBIDDEN, "forbidden", "Forbidden")
        conn.authorizer = {
            "principalId": payload.get("principalId"),
            **(payload.get("context") or {}),
        }
        context = self._context(conn, CONNECT_ROUTE, "CONNECT")
        event = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": auth_event["queryStringParameters"],
            "multiValueQueryStringParameters": multi_query or None,
            "requestContext": context,
            "isBase64Encoded": False,
        }
        status = await self._integration_status(event)
        self._access(conn, context, status)
        if not 200 <= status < 300:
            return self._refuse(socket, HTTPStatus(status), "connect_refused", "Connection refused")
        # Known from here on: a management POST right after the client's handshake waits
        # for the socket to open instead of finding no connection.
        conn.socket = socket
        conn.ready = asyncio.Event()
        with self._lock:
            self._connections[conn.connection_id] = conn
        socket.stratus_connection = conn  # type: ignore[attr-defined]
        return None

    async def _integration_status(self, event: dict[str, Any]) -> int:
        try:
            result = await self._run(self._router, event)
        except TooManyRequests:
            return 429
        if result.error is not None:
            log.warning("$connect failed: %s", result.error.get("errorMessage"))
            return 500
        payload = result.payload if isinstance(result.payload, dict) else {}
        try:
            status = int(payload.get("statusCode", 200))
        except (TypeError, ValueError):
            return 500
        return status if 100 <= status < 600 else 500

    @staticmethod
    def _refuse(socket: ServerConnection, status: HTTPStatus, code: str, message: str) -> Response:
        body = {"message": message, "error": {"code": code, "message": message}}
        response = socket.respond(status, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    # -- an open connection --------------------------------------------------------------

    async def _session(self, socket: ServerConnection) -> None:
        conn: Connection = socket.stratus_connection  # type: ignore[attr-defined]
        conn.last_active_ms = now_ms()
        if conn.ready is not None:
            conn.ready.set()
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for message in socket:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                conn.last_active_ms = now_ms()
                task = asyncio.create_task(self._message(conn, text))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            with self._lock:
                self._connections.pop(conn.connection_id, None)
            context = self._context(conn, DISCONNECT_ROUTE, "DISCONNECT")
            context["disconnectStatusCode"] = socket.close_code
            context["disconnectReason"] = socket.close_reason or ""
            event = {"requestContext": context, "isBase64Encoded": False}
            # API Gateway calls $disconnect best effort, after the socket is gone.
            future = asyncio.get_running_loop().run_in_executor(
                self._pool, self._call, self._router, event
            )
            future.add_done_callback(
                lambda f: self._access(conn, context, 200 if not f.exception() else 500)
            )

    async def _message(self, conn: Connection, text: str) -> None:
        route = select_route(text, self.routes)
        context = self._context(conn, route, "MESSAGE")
        context["messageId"] = secrets.token_urlsafe(9) + "="
        if not self.bucket.take():
            self._access(conn, context, 429)
            frame = {
                "type": "error",
                "id": frame_id(text),
                "error": {"code": "throttled", "message": "Too many requests, slow down"},
            }
            await self._send(conn, json.dumps(frame))
            return
        event = {"requestContext": context, "body": text, "isBase64Encoded": False}
        status = 200
        try:
            result = await self._run(self._router, event)
            failed = result.error is not None
        except TooManyRequests:
            failed, status = True, 429
        except Exception:
            log.exception("websocket integration failed")
            failed = True
        if failed:
            status = 500 if status == 200 else status
            answer = {
                "message": "Internal server error" if status == 500 else "Too Many Requests",
                "connectionId": conn.connection_id,
                "requestId": context["requestId"],
            }
            await self._send(conn, json.dumps(answer))
        self._access(conn, context, status, bytes=len(text.encode()))

    async def _send(self, conn: Connection, data: str | bytes) -> bool:
        socket = conn.socket
        if socket is None or conn.closed:
            return False
        if conn.ready is not None and not conn.ready.is_set():
            try:
                await asyncio.wait_for(conn.ready.wait(), SEND_TIMEOUT_S)
            except TimeoutError:  # the handshake never finished: the client is gone
                with self._lock:
                    self._connections.pop(conn.connection_id, None)
                return False
        try:
            await socket.send(data)
        except ConnectionClosed:
            return False
        return True

    # -- the management API (@connections) ------------------------------------------------

    def manage(
        self, method: str, connection_id: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One ``@connections`` call: ``(status, headers, body)`` as API Gateway answers it."""
        connection_id = unquote(connection_id)
        with self._lock:
            conn = self._connections.get(connection_id)
        if conn is None or conn.closed or self._loop is None:
            return gone(connection_id)
        if method == "POST":
            if len(body) > self._max_message_bytes:
                return aws_error(413, "PayloadTooLargeException", "the frame is over 128 KiB")
            try:
                data: str | bytes = body.decode("utf-8")
            except UnicodeDecodeError:
                data = body
            future = asyncio.run_coroutine_threadsafe(self._send(conn, data), self._loop)
            try:
                sent = future.result(SEND_TIMEOUT_S)
            except Exception:
                sent = False
            return (200, {}, b"") if sent else gone(connection_id)
        if method == "GET":
            info = {  # the wire names (boto3 shows ConnectedAt, Identity, LastActiveAt)
                "connectedAt": iso(conn.connected_at_ms),
                "lastActiveAt": iso(conn.last_active_ms or conn.connected_at_ms),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent or ""},
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
        if method == "DELETE":
            socket = conn.socket
            if socket is not None:
                asyncio.run_coroutine_threadsafe(
                    socket.close(1000, "closed by the server"), self._loop
                )
            return 204, {}, b""
        return aws_error(400, "BadRequestException", f"{method} is not a management call")

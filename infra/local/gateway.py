"""The local API Gateway: HTTP requests in, REST API proxy events to the real handlers.

It serves the routes of ``infra.topology.api_routes`` with API Gateway's
precedence (literal segments beat ``{param}``, which beats ``{proxy+}``; the
resource is chosen first, then its method), runs the same REQUEST authorizer
function first and caches its decisions per ``Authorization`` header for 60 s
(``STRATUS_LOCAL_AUTHORIZER_CACHE_S``, like the stage's ``authorizer_cache_s``: a
revoked key or a suspended tenant is refused once the cached decision expires),
enforces API Gateway's 10 MB payload limit, and answers every request, in the
handlers' error shape with the deployed stack's gateway responses
(``infra.topology.GATEWAY_ERRORS``) when it answers itself:

* a method or path the API does not declare (``TRACE`` included): API Gateway's
  ``MISSING_AUTHENTICATION_TOKEN`` (``404 not_found`` in this stack);
* a body over 10 MB, with ``Content-Length`` or chunked: the body is read and
  discarded, then ``413 payload_too_large`` (never a connection closed unanswered);
* a function whose workers are all busy: ``429 throttled`` with ``Retry-After``;
* a request it cannot parse: ``400 bad_request``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from infra.local.aws_front import InvokeResultLike
from infra.local.lambda_types import TooManyRequests
from infra.local.loopback import LoopbackServer
from infra.topology import Route, gateway_error
from stratus import correlation

log = logging.getLogger("stratus.local.api")

API_GATEWAY_MAX_PAYLOAD = 10 * 1024 * 1024
#: Past this a body is no longer drained: the connection is closed (a client flood).
MAX_DRAINED_BYTES = 16 * API_GATEWAY_MAX_PAYLOAD
AUTHORIZER_CACHE_TTL_S = 60.0
#: Overrides ``AUTHORIZER_CACHE_TTL_S`` (seconds, 0 = no caching), as a stage sets its own.
AUTHORIZER_CACHE_ENV = "STRATUS_LOCAL_AUTHORIZER_CACHE_S"
ACCOUNT_ID = "000000000000"
API_ID = "local"
#: The verbs a REST API method can have; ``ANY`` means these seven, nothing else.
API_GATEWAY_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: What a throttled function's 429 tells the client to wait, in seconds.
THROTTLE_RETRY_AFTER_S = 1

Invoker = Callable[[str, Any], InvokeResultLike]


@dataclass(frozen=True)
class Match:
    route: Route
    path_parameters: dict[str, str]


def _score(route: Route) -> tuple[int, int]:
    """Higher wins: more literal segments, then no greedy proxy."""
    segments = route.path.strip("/").split("/")
    literal = sum(1 for s in segments if not s.startswith("{"))
    greedy = any(s.endswith("+}") for s in segments)
    return literal, 0 if greedy else 1


def match_route(routes: Sequence[Route], method: str, path: str) -> Match | None:
    """The method API Gateway runs for ``method path``, or None (its 'Missing Authentication
    Token'). As in API Gateway, the most specific resource is chosen first, then its method:
    a resource without that method does not fall back to a ``{proxy+}`` above it."""
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    best: tuple[tuple[int, int], str, dict[str, str]] | None = None
    for route in routes:
        params = _match_segments(route.path.strip("/").split("/"), parts)
        if params is not None and (best is None or _score(route) > best[0]):
            best = (_score(route), route.path, params)
    if best is None or method not in API_GATEWAY_METHODS:
        return None
    on_resource = [r for r in routes if r.path == best[1]]
    for wanted in (method, "ANY"):
        for route in on_resource:
            if route.method == wanted:
                return Match(route, best[2])
    return None


def _match_segments(pattern: list[str], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for index, segment in enumerate(pattern):
        if segment.startswith("{") and segment.endswith("+}"):
            rest = parts[index:]
            if not rest:
                return None
            params[segment[1:-2]] = "/".join(rest)
            return params
        if index >= len(parts):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            params[segment[1:-1]] = parts[index]
        elif segment != parts[index]:
            return None
    return params if len(pattern) == len(parts) else None


def error_body(status: int, code: str, message: str, request_id: str | None) -> tuple[int, bytes]:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return status, json.dumps(body).encode()


def stack_error(
    response_type: str, request_id: str, *, status: int | None = None, message: str | None = None
) -> tuple[int, bytes]:
    """The deployed stack's gateway response of ``response_type`` (status, code, message)."""
    error = gateway_error(response_type)
    resolved = error.status if error.status is not None else status
    assert resolved is not None, f"{response_type} keeps API Gateway's status: pass one"
    text = message if message is not None or error.message.startswith("$") else error.message
    return error_body(resolved, error.code, text or "", request_id)


class AuthorizerDenied(Exception):
    """The authorizer answered Deny with a reason in its context (a key of another region's
    tenant): API Gateway's ACCESS_DENIED response, its details from that context."""

    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__(str(context.get("error_code") or "denied"))
        self.context = context


def denied_error(request_id: str, context: dict[str, Any]) -> tuple[int, bytes]:
    """The stage's ACCESS_DENIED gateway response, substituted from the Deny's context."""
    error = gateway_error("ACCESS_DENIED")
    assert error.status is not None
    return error.status, json.dumps(error.body(request_id, authorizer=context)).encode()


class BadFraming(Exception):
    """The request's body framing (Content-Length, Transfer-Encoding) cannot be read."""


class BodyTooLarge(Exception):
    """The body is over API Gateway's limit (it has been read and discarded)."""


def _json_errors(handler_class: type[BaseHTTPRequestHandler]) -> type[BaseHTTPRequestHandler]:
    """The loopback handler, answering every verb and its own parse errors as JSON."""

    class Handler(handler_class):  # type: ignore[misc, valid-type]
        def __getattr__(self, name: str) -> Any:
            # BaseHTTPRequestHandler answers an HTML 501 for a verb without do_<VERB>;
            # API Gateway answers any verb (TRACE, PROPFIND, ...), so this one does too.
            if name.startswith("do_"):
                return self.do_GET
            raise AttributeError(name)

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # Malformed request lines and headers: the error shape, not http.server's HTML.
            self.log_error("code %d, message %s", code, message)
            if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
                self.request_version = "HTTP/1.1"  # unparsed: answer with a status line anyway
            status, body = error_body(
                code, "bad_request", message or "The request could not be parsed.", None
            )
            self.send_response(status, message)
            self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)

    return Handler


class LocalApiGateway(LoopbackServer):
    """A REST API stage on loopback, backed by the local Lambda runtime."""

    def __init__(
        self,
        routes: Sequence[Route],
        functions: Mapping[str, str],
        invoke: Invoker,
        *,
        authorizer: str | None,
        stage: str = "local",
        host: str = "127.0.0.1",
        port: int = 0,
        authorizer_cache_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes = list(routes)
        self.authorizer_cache_s = (
            authorizer_cache_s if authorizer_cache_s is not None else authorizer_cache_ttl()
        )
        self._clock = clock
        self._functions = dict(functions)  # route target (plan key) -> function name
        self._invoke = invoke
        self._authorizer = authorizer
        self._stage = stage
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._cache_lock = threading.Lock()
        super().__init__("api-gateway", self._handle, host=host, port=port, log=log)
        handler = cast(type[BaseHTTPRequestHandler], self._server.RequestHandlerClass)
        self._server.RequestHandlerClass = _json_errors(handler)

    # -- one request --------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        status, headers, body = self._respond(request, request_id)
        if not any(key.lower() == "x-correlation-id" for key, _ in headers):
            # The gateway's own answers (401, 404, 413, 429, 502) carry the id too (issue 16).
            cid = correlation.from_headers(dict(request.headers.items()))
            headers = [*headers, (correlation.HEADER, cid)]
        request.send_response(status)
        for key, value in headers:
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("x-amzn-RequestId", request_id)
        request.end_headers()
        request.wfile.write(body)
        log.info(
            "%s %s -> %d (%.0f ms)",
            request.command,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
        )

    def _respond(
        self, request: BaseHTTPRequestHandler, request_id: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        json_headers = [("Content-Type", "application/json")]
        try:
            body = _read_body(request)
        except BodyTooLarge:
            status, data = stack_error("REQUEST_TOO_LARGE", request_id)
            return status, json_headers, data
        except BadFraming as problem:
            request.close_connection = True  # the next request's start is unknown
            status, data = stack_error("DEFAULT_4XX", request_id, status=400, message=str(problem))
            return status, json_headers, data
        url = urlsplit(request.path)
        match = match_route(self._routes, request.command, url.path)
        if match is None:
            status, data = stack_error("MISSING_AUTHENTICATION_TOKEN", request_id)
            return status, json_headers, data
        route = match.route
        event = self._proxy_event(request, url.path, url.query, body, match, request_id)
        try:
            if route.authorized:
                try:
                    context = self._authorize(request, event)
                except AuthorizerDenied as denied:
                    status, data = denied_error(request_id, denied.context)
                    return status, json_headers, data
                if context is None:
                    status, data = stack_error("UNAUTHORIZED", request_id)
                    return status, json_headers, data
                event["requestContext"]["authorizer"] = context
            result = self._invoke(self._functions[route.target], event)
        except TooManyRequests as throttled:
            # Reserved concurrency exhausted: Lambda's 429, as the stage's THROTTLED response.
            log.warning("throttled: %s", throttled)
            status, data = stack_error("THROTTLED", request_id)
            return status, [*json_headers, ("Retry-After", str(THROTTLE_RETRY_AFTER_S))], data
        except Exception:
            log.exception("integration failed")
            status, data = stack_error("DEFAULT_5XX", request_id, status=502)
            return status, json_headers, data
        if result.error is not None or not isinstance(result.payload, dict):
            log.warning("integration failed: %s", (result.error or {}).get("errorMessage"))
            status, data = stack_error("DEFAULT_5XX", request_id, status=502)
            return status, json_headers, data
        return _http_response(result.payload)

    def _proxy_event(
        self,
        request: BaseHTTPRequestHandler,
        path: str,
        query: str,
        body: bytes,
        match: Match,
        request_id: str,
    ) -> dict[str, Any]:
        multi_headers: dict[str, list[str]] = {}
        for key, value in request.headers.items():
            multi_headers.setdefault(key, []).append(value)
        multi_query: dict[str, list[str]] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            multi_query.setdefault(key, []).append(value)
        try:
            text: str | None = body.decode("utf-8") if body else None
            encoded = False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
        now = datetime.now(UTC)
        source_ip = request.client_address[0]
        return {
            "resource": match.route.path,
            "path": path,
            "httpMethod": request.command,
            "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": match.path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": match.route.path,
                "httpMethod": request.command,
                "extendedRequestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self._stage}{path}",
                "accountId": ACCOUNT_ID,
                "protocol": "HTTP/1.1",
                "stage": self._stage,
                "domainPrefix": "localhost",
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": request_id,
                "identity": {"sourceIp": source_ip, "userAgent": request.headers.get("User-Agent")},
                "domainName": "localhost",
                "apiId": API_ID,
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    def _authorize(
        self, request: BaseHTTPRequestHandler, event: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Run the REQUEST authorizer (or reuse its cached decision); None means 401."""
        header = request.headers.get("Authorization")
        if not header or self._authorizer is None:
            return None  # the identity source is missing: API Gateway answers 401 itself
        now = self._clock()
        with self._cache_lock:
            cached = self._cache.get(header)
            if cached and cached[0] > now:
                return dict(cached[1])
        auth_event = {
            "type": "REQUEST",
            "methodArn": f"arn:aws:execute-api:us-east-1:{ACCOUNT_ID}:{API_ID}/{self._stage}/"
            f"{event['httpMethod']}{event['path']}",
            **{
                k: event[k]
                for k in (
                    "resource",
                    "path",
                    "httpMethod",
                    "headers",
                    "multiValueHeaders",
                    "queryStringParameters",
                    "multiValueQueryStringParameters",
                    "pathParameters",
                    "stageVariables",
                    "requestContext",
                )
            },
        }
        result = self._invoke(self._authorizer, auth_event)
        if result.error is not None or not isinstance(result.payload, dict):
            return None
        statements = (result.payload.get("policyDocument") or {}).get("Statement") or []
        if not any(s.get("Effect") == "Allow" for s in statements):
            denial = result.payload.get("context") or {}
            if denial.get("error_code"):  # a Deny with a reason: 403, never cached here
                raise AuthorizerDenied(dict(denial))
            return None
        context = {
            "principalId": result.payload.get("principalId"),
            **(result.payload.get("context") or {}),
        }
        if self.authorizer_cache_s > 0:
            with self._cache_lock:
                self._cache[header] = (now + self.authorizer_cache_s, context)
        return dict(context)


def authorizer_cache_ttl(environ: Mapping[str, str] | None = None) -> float:
    """The local authorizer cache window: ``STRATUS_LOCAL_AUTHORIZER_CACHE_S`` or 60 s."""
    raw = (os.environ if environ is None else environ).get(AUTHORIZER_CACHE_ENV, "").strip()
    if not raw:
        return AUTHORIZER_CACHE_TTL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{AUTHORIZER_CACHE_ENV} must be a number of seconds, not {raw!r}"
        ) from None
    if not 0 <= value <= 3600:
        raise ValueError(f"{AUTHORIZER_CACHE_ENV} must be 0..3600 seconds")
    return value


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    """The whole body (``Content-Length`` or chunked), at most API Gateway's 10 MB.

    A larger body is still read to its end and discarded (up to ``MAX_DRAINED_BYTES``),
    so the client, which is still sending it, then reads the 413 instead of a reset.
    """
    encoding = (request.headers.get("Transfer-Encoding") or "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise BadFraming(f"Unsupported Transfer-Encoding: {encoding!r}.")
        return _read_chunked(request)
    raw = (request.headers.get("Content-Length") or "0").strip()
    if not raw.isascii() or not raw.isdigit():
        raise BadFraming("Content-Length is not a number.")
    length = int(raw)
    if length <= API_GATEWAY_MAX_PAYLOAD:
        body = request.rfile.read(length) if length else b""
        if len(body) < length:
            raise BadFraming("The body ended before Content-Length bytes.")
        return body
    if length > MAX_DRAINED_BYTES:
        request.close_connection = True
        raise BodyTooLarge
    _discard(request, length)
    raise BodyTooLarge


def _discard(request: BaseHTTPRequestHandler, length: int) -> None:
    left = length
    while left > 0:
        chunk = request.rfile.read(min(left, 1024 * 1024))
        if not chunk:
            request.close_connection = True
            return
        left -= len(chunk)


def _read_chunked(request: BaseHTTPRequestHandler) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = request.rfile.readline(1024)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadFraming("A chunk size is not hexadecimal.") from None
        if size < 0:
            raise BadFraming("A chunk size is negative.")
        if size == 0:
            while request.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            break
        total += size
        if total > MAX_DRAINED_BYTES:
            request.close_connection = True
            raise BodyTooLarge
        if total > API_GATEWAY_MAX_PAYLOAD:
            parts.clear()  # keep draining, keep nothing
            _discard(request, size)
        else:
            chunk = request.rfile.read(size)
            if len(chunk) < size:
                raise BadFraming("The body ended inside a chunk.")
            parts.append(chunk)
        if request.rfile.readline(1024).strip():
            raise BadFraming("A chunk is longer than its size.")
    if total > API_GATEWAY_MAX_PAYLOAD:
        raise BodyTooLarge
    return b"".join(parts)


def _http_response(payload: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda proxy integration response, as API Gateway turns it into HTTP."""
    status = int(payload.get("statusCode") or 200)
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, values in (payload.get("multiValueHeaders") or {}).items():
        seen.add(key.lower())
        headers.extend((key, str(v)) for v in values)
    for key, value in (payload.get("headers") or {}).items():
        if key.lower() not in seen:
            headers.append((key, str(value)))
    raw = payload.get("body") or ""
    data = base64.b64decode(raw) if payload.get("isBase64Encoded") else str(raw).encode()
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    return status, headers, data

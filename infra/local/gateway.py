"""The local API Gateway: HTTP requests in, REST API proxy events to the real handlers.

It serves the routes of ``infra.topology.api_routes`` with API Gateway's
precedence (literal segments beat ``{param}``, which beats ``{proxy+}``),
runs the same REQUEST authorizer function first and caches its decisions per
``Authorization`` header for 60 s, validates invoke bodies against the same
contract model as the deployed request validator, enforces API Gateway's
10 MB payload limit, and answers its own errors in the handlers' error shape.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from infra.local.aws_front import InvokeResultLike
from infra.local.loopback import LoopbackServer
from infra.topology import Route
from stratus.contracts import InvokeRequest

log = logging.getLogger("stratus.local.api")

API_GATEWAY_MAX_PAYLOAD = 10 * 1024 * 1024
AUTHORIZER_CACHE_TTL_S = 60.0
ACCOUNT_ID = "000000000000"
API_ID = "local"

Invoker = Callable[[str, Any], InvokeResultLike]


@dataclass(frozen=True)
class Match:
    route: Route
    path_parameters: dict[str, str]


def _score(route: Route, method: str) -> tuple[int, int, int]:
    """Higher wins: more literal segments, no greedy proxy, an exact verb over ANY."""
    segments = route.path.strip("/").split("/")
    literal = sum(1 for s in segments if not s.startswith("{"))
    greedy = any(s.endswith("+}") for s in segments)
    return literal, 0 if greedy else 1, 1 if route.method == method else 0


def match_route(routes: Sequence[Route], method: str, path: str) -> Match | None:
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    best: tuple[tuple[int, int, int], Match] | None = None
    for route in routes:
        if route.method not in (method, "ANY"):
            continue
        params = _match_segments(route.path.strip("/").split("/"), parts)
        if params is None:
            continue
        candidate = (_score(route, method), Match(route, params))
        if best is None or candidate[0] > best[0]:
            best = candidate
    return best[1] if best else None


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


def gateway_error(status: int, code: str, message: str, request_id: str) -> tuple[int, bytes]:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return status, json.dumps(body).encode()


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
    ) -> None:
        self._routes = list(routes)
        self._functions = dict(functions)  # route target (plan key) -> function name
        self._invoke = invoke
        self._authorizer = authorizer
        self._stage = stage
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._cache_lock = threading.Lock()
        super().__init__("api-gateway", self._handle, host=host, port=port, log=log)

    # -- one request --------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        status, headers, body = self._respond(request, request_id)
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
        length = int(request.headers.get("Content-Length") or 0)
        if length > API_GATEWAY_MAX_PAYLOAD:
            request.close_connection = True
            status, data = gateway_error(
                413, "payload_too_large", "The request body is too large.", request_id
            )
            return status, json_headers, data
        body = request.rfile.read(length) if length else b""
        url = urlsplit(request.path)
        match = match_route(self._routes, request.command, url.path)
        if match is None:
            status, data = gateway_error(404, "not_found", "No such route.", request_id)
            return status, json_headers, data
        route = match.route
        event = self._proxy_event(request, url.path, url.query, body, match, request_id)

        if route.authorized:
            context = self._authorize(request, event)
            if context is None:
                status, data = gateway_error(
                    401,
                    "unauthorized",
                    "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                    request_id,
                )
                return status, json_headers, data
            event["requestContext"]["authorizer"] = context

        if route.validate_invoke_body:
            problem = _invalid_invoke_body(body)
            if problem is not None:
                status, data = gateway_error(422, "validation_error", problem, request_id)
                return status, json_headers, data

        result = self._invoke(self._functions[route.target], event)
        if result.error is not None or not isinstance(result.payload, dict):
            log.warning("integration failed: %s", (result.error or {}).get("errorMessage"))
            status, data = gateway_error(
                502, "internal_error", "An internal error occurred.", request_id
            )
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
        now = time.monotonic()
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
            return None
        context = {
            "principalId": result.payload.get("principalId"),
            **(result.payload.get("context") or {}),
        }
        with self._cache_lock:
            self._cache[header] = (now + AUTHORIZER_CACHE_TTL_S, context)
        return dict(context)


def _invalid_invoke_body(body: bytes) -> str | None:
    """What the deployed request validator would say about an invoke body, or None."""
    try:
        InvokeRequest.model_validate_json(body or b"")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return f"Invalid request body: {where}: {first['msg']}"
    return None


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

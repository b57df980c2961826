"""The local API Gateway over real sockets: every request gets an HTTP answer in the error shape.

The gateway runs with a stub Lambda runtime (the real one is covered in
``test_lambda_runtime.py`` and end to end in ``tests/e2e``), so each edge is
cheap and deterministic: methods API Gateway does not serve, oversized and
chunked bodies, malformed requests, a throttled or crashing function.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from infra.local.gateway import API_GATEWAY_MAX_PAYLOAD, LocalApiGateway
from infra.local.lambda_types import InvokeResult, TooManyRequests
from infra.topology import api_routes, gateway_error

ALLOW = {
    "principalId": "tenant-a",
    "policyDocument": {"Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke"}]},
    "context": {"tenant_id": "tenant-a"},
}
AUTH = "Authorization: Bearer sk-test\r\n"


class StubRuntime:
    """Answers the authorizer with Allow and every other function with an echo of its event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    def __call__(self, name: str, event: Any) -> InvokeResult:
        if name == "auth":
            return InvokeResult("r", ALLOW, None, 1.0, False)
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.events.append(event)
        body = {"function": name, "body": event["body"], "base64": event["isBase64Encoded"]}
        payload = {"statusCode": 200, "headers": {"X-Fn": name}, "body": json.dumps(body)}
        return InvokeResult("r", payload, None, 1.0, False)


@pytest.fixture
def stub() -> StubRuntime:
    return StubRuntime()


@pytest.fixture
def gateway(stub: StubRuntime) -> Iterator[LocalApiGateway]:
    functions = {"platform": "platform", "agent:triage": "triage", "agent:support": "support"}
    server = LocalApiGateway(
        api_routes(["triage", "support"]), functions, stub, authorizer="auth"
    ).start()
    yield server
    server.stop()


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: Any


def exchange(gateway: LocalApiGateway, request: bytes, *, chunks: Iterable[bytes] = ()) -> Raw:
    """Send raw bytes (then any chunks) on one connection and read one response."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(request)
        for chunk in chunks:
            sock.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, f"connection closed before a response: {data!r}"
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            more = sock.recv(65536)
            assert more, "connection closed mid-body"
            rest += more
    try:
        body: Any = json.loads(rest) if rest else None
    except ValueError:
        body = rest.decode(errors="replace")
    return Raw(status, headers, body)


def request(method: str, path: str, body: bytes = b"", extra: str = AUTH) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


def assert_shape(reply: Raw, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert set(reply.body) == {"error"}, reply.body
    assert reply.body["error"]["code"] == code
    assert reply.body["error"]["message"]
    assert reply.body["error"]["request_id"] == reply.headers["x-amzn-requestid"]


# --- methods and paths API Gateway does not serve ------------------------------------------

MISSING = gateway_error("MISSING_AUTHENTICATION_TOKEN")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("TRACE", "/v1/health"),
        ("TRACE", "/v1/agents/triage/sessions"),  # not even under an ANY method
        ("CONNECT", "/v1/jobs"),
        ("PROPFIND", "/v1/jobs"),
        ("DELETE", "/v1/health"),  # a declared resource, an undeclared method
        ("PUT", "/v1/jobs"),
        ("GET", "/v1/agents/triage/invoke"),
        ("GET", "/nowhere"),
        ("GET", "/"),
        ("POST", "/v1/jobs/a/b/c"),
    ],
)
def test_undeclared_methods_and_paths_answer_what_api_gateway_answers(
    gateway: LocalApiGateway, stub: StubRuntime, method: str, path: str
) -> None:
    reply = exchange(gateway, request(method, path))
    assert_shape(reply, MISSING.status or 0, MISSING.code)
    assert reply.body["error"]["message"] == MISSING.message
    assert stub.events == []  # no function ran


def test_any_routes_serve_every_method_api_gateway_has(
    gateway: LocalApiGateway, stub: StubRuntime
) -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        reply = exchange(gateway, request(method, "/v1/agents/triage/sessions/s-1"))
        assert reply.status == 200 and reply.body["function"] == "triage", (method, reply.body)
    head = exchange(gateway, request("HEAD", "/v1/agents/triage/sessions/s-1"))
    assert head.status == 200


# --- bodies ----------------------------------------------------------------------------------


def test_a_body_over_10_mb_is_drained_and_answered_413(
    gateway: LocalApiGateway, stub: StubRuntime
) -> None:
    size = API_GATEWAY_MAX_PAYLOAD + 1
    head = request("POST", "/v1/jobs").replace(
        b"Content-Length: 0", f"Content-Length: {size}".encode()
    )
    block = b"x" * (1024 * 1024)
    chunks = iter([block] * (size // len(block)) + [b"x" * (size % len(block))])
    reply = exchange(gateway, head, chunks=chunks)
    assert_shape(reply, 413, "payload_too_large")
    assert stub.events == []


def _chunked(parts: list[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def test_a_chunked_body_over_10_mb_is_answered_413(
    gateway: LocalApiGateway, stub: StubRuntime
) -> None:
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\n"
        + AUTH.encode()
        + b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    )
    block = b"y" * (1024 * 1024)
    reply = exchange(gateway, head, chunks=_chunked([block] * 11))
    assert_shape(reply, 413, "payload_too_large")
    assert stub.events == []


def test_a_small_chunked_body_reaches_the_function_whole(
    gateway: LocalApiGateway, stub: StubRuntime
) -> None:
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\n"
        + AUTH.encode()
        + b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    )
    reply = exchange(gateway, head, chunks=_chunked([b'{"agent": ', b'"triage"}']))
    assert reply.status == 200, reply.body
    assert reply.body["body"] == '{"agent": "triage"}'


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    ],
    ids=["length-not-a-number", "negative-length", "bad-chunk-size", "unknown-encoding"],
)
def test_a_malformed_body_framing_is_400_in_the_error_shape(
    gateway: LocalApiGateway, stub: StubRuntime, raw: bytes
) -> None:
    reply = exchange(gateway, raw)
    assert reply.status == 400, reply.body
    assert reply.body["error"]["code"] == "bad_request"
    assert stub.events == []


def test_a_malformed_request_line_is_json_not_html(gateway: LocalApiGateway) -> None:
    reply = exchange(gateway, b"GET /v1/health HTTP/9.x\r\n\r\n")
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.body["error"]["code"] == "bad_request"


def test_invoke_bodies_reach_the_function_which_tells_invalid_json_from_schema_errors(
    gateway: LocalApiGateway, stub: StubRuntime
) -> None:
    # The deployed API has no gateway body model (it would answer BAD_REQUEST_BODY for both).
    for body in (b'{"input": ', b'{"text": "x"}', b"\xff\xfe"):
        reply = exchange(gateway, request("POST", "/v1/agents/triage/invoke", body))
        assert reply.status == 200 and reply.body["function"] == "triage", reply.body
    assert len(stub.events) == 3
    assert stub.events[2]["isBase64Encoded"] is True  # not UTF-8: base64, as API Gateway does


# --- the function cannot answer ----------------------------------------------------------------


def test_a_throttled_function_is_429_throttled_with_retry_after(
    gateway: LocalApiGateway, stub: StubRuntime
) -> None:
    stub.fail = TooManyRequests("all 10 workers busy")
    reply = exchange(gateway, request("POST", "/v1/jobs", b"{}"))
    assert_shape(reply, 429, "throttled")
    assert int(reply.headers["retry-after"]) >= 1


def test_a_runtime_failure_is_a_5xx_in_the_error_shape_not_a_dropped_connection(
    gateway: LocalApiGateway, stub: StubRuntime
) -> None:
    stub.fail = RuntimeError("the local cloud is not running")
    reply = exchange(gateway, request("POST", "/v1/jobs", b"{}"))
    assert reply.status in (500, 502)
    assert reply.body["error"]["code"] == "internal_error"

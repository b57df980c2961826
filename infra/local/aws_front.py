"""The local AWS endpoint: Lambda Invoke served here, everything else sent to moto.

moto cannot run Lambda code, and its Step Functions interpreter invokes Lambda
through ``http://localhost:$MOTO_PORT``. So the port every client (boto3,
``aws --endpoint-url``, moto's interpreter) knows as "AWS" is this front: it
answers the Lambda Invoke API by running the real handler in the local Lambda
runtime, and forwards every other request, byte for byte, to moto's server.

Invoke honours ``?Qualifier=`` (and a qualified ARN, ``name:qualifier``): a version
label or ``$LATEST`` runs exactly that version, ``live`` or none goes through the
weighted alias (:mod:`infra.local.lambda_versions`); ``X-Amz-Executed-Version`` says
which ran. ``/_stratus/canary...`` is the local cloud's own control API (``stratus
canary`` / ``stratus rollback``), answered only for loopback clients
(:mod:`infra.local.canary_control`).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from infra.local.loopback import LoopbackServer

log = logging.getLogger("stratus.local.aws")

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations(?:\?.*)?$")
#: Hop-by-hop headers are the proxy's own business (RFC 9110 §7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
}


class InvokeResultLike(Protocol):
    @property
    def payload(self) -> Any: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def request_id(self) -> str: ...


#: ``invoke(name, event, qualifier)``: qualifier None is the alias.
Invoker = Callable[[str, Any, str | None], InvokeResultLike]
#: ``control(method, path, body) -> (status, payload)`` for ``/_stratus/...``.
Control = Callable[[str, str, Any], tuple[int, Any]]
CONTROL_PREFIX = "/_stratus/"
#: The WebSocket management API (``@connections``) of the local WebSocket API, under
#: ``/@ws/<stage>`` (``STRATUS_WS_CALLBACK_URL``): ``manage(method, connection id, body)``.
MANAGEMENT_PREFIX = "/@ws/"
MANAGEMENT_PATH = re.compile(r"^/@ws/[^/]+/(?:@|%40)connections/(?P<id>[^/?]+)$")
Management = Callable[[str, str, bytes], tuple[int, dict[str, str], bytes]]


def function_name(identifier: str) -> str:
    """A function name from a name, a partial ARN or a full ARN (qualifier dropped)."""
    value = unquote(identifier)
    if value.startswith("arn:"):
        parts = value.split(":")
        return parts[6] if len(parts) > 6 else value
    if ":function:" in value:  # 123456789012:function:name
        value = value.split(":function:", 1)[1]
    return value.split(":", 1)[0]


def qualifier_of(identifier: str, query: str = "") -> str | None:
    """The Invoke's qualifier: ``?Qualifier=`` or the ARN's / name's ``:qualifier`` suffix."""
    given = parse_qs(query).get("Qualifier")
    if given:
        return given[0]
    value = unquote(identifier)
    if value.startswith("arn:"):
        parts = value.split(":")
        return parts[7] if len(parts) > 7 and parts[7] else None
    if ":function:" in value:
        value = value.split(":function:", 1)[1]
    return value.split(":", 1)[1] or None if ":" in value else None


class AwsFront(LoopbackServer):
    """An HTTP server on loopback: the AWS endpoint URL of the local cloud."""

    def __init__(
        self,
        moto_port: int,
        invoke: Invoker,
        *,
        known: Callable[[str], bool],
        host: str = "127.0.0.1",
        port: int = 0,
        control: Control | None = None,
    ) -> None:
        #: Where everything but Lambda Invoke goes (settable: moto may start after the front).
        self.moto_port = moto_port
        self._invoke = invoke
        self._known = known
        #: The local cloud's control API (settable: the runtime starts after the front).
        self.control = control
        #: The local WebSocket API's ``@connections`` (settable: it starts after the front).
        self.connections: Management | None = None
        super().__init__("aws-front", self._handle, host=host, port=port, log=log)

    # -- request handling ---------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        if request.path.startswith(CONTROL_PREFIX):
            self._control(request, body)
            return
        if request.path.startswith(MANAGEMENT_PREFIX):
            self._connections(request, body)
            return
        match = INVOKE_PATH.match(request.path)
        if request.command == "POST" and match and self._known(function_name(match["name"])):
            qualifier = qualifier_of(match["name"], urlsplit(request.path).query)
            self._lambda_invoke(request, function_name(match["name"]), body, qualifier)
        else:
            self._forward(request, body)

    def _control(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        host = str(request.client_address[0])
        if self.control is None or not (host.startswith("127.") or host == "::1"):
            self._send(
                request, 404, {"error": {"code": "not_found", "message": "no such path"}}, {}
            )
            return
        try:
            data = json.loads(body) if body else None
        except ValueError:
            error = {"code": "invalid_json", "message": "the body is not JSON"}
            self._send(request, 400, {"error": error}, {})
            return
        status, payload = self.control(request.command, urlsplit(request.path).path, data)
        self._send(request, status, payload, {})

    def _connections(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        match = MANAGEMENT_PATH.match(urlsplit(request.path).path)
        if self.connections is None or match is None:
            status, headers, data = 404, {"x-amzn-ErrorType": "NotFoundException"}, b"{}"
        else:
            status, headers, data = self.connections(request.command, match["id"], body)
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _lambda_invoke(
        self, request: BaseHTTPRequestHandler, name: str, body: bytes, qualifier: str | None
    ) -> None:
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        try:
            event = json.loads(body) if body else {}
        except ValueError:
            self._send(
                request,
                400,
                {"Type": "User", "message": "Could not parse request body"},
                {"x-amzn-ErrorType": "InvalidRequestContentException"},
            )
            return
        if invocation_type == "DryRun":
            self._send(request, 204, None, {})
            return
        if invocation_type == "Event":
            threading.Thread(
                target=self._invoke,
                args=(name, event, qualifier),
                daemon=True,
                name=f"async-{name}",
            ).start()
            self._send(request, 202, None, {"x-amzn-RequestId": str(uuid.uuid4())})
            return
        try:
            result = self._invoke(name, event, qualifier)
        except KeyError as missing:  # FunctionNotFound: an unknown version
            message = str(missing.args[0]) if missing.args else f"Function not found: {name}"
            self._send(
                request,
                404,
                {"Type": "User", "Message": message, "message": message},
                {"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
            return
        version = str(getattr(result, "version", "$LATEST"))
        headers = {"x-amzn-RequestId": result.request_id, "X-Amz-Executed-Version": version}
        if result.error is not None:
            headers["X-Amz-Function-Error"] = "Unhandled"
            self._send(request, 200, result.error, headers)
        else:
            self._send(request, 200, result.payload, headers)

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str]
    ) -> None:
        data = b"" if payload is None and status in (202, 204) else json.dumps(payload).encode()
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=120)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(request.command, request.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            log.warning("moto did not answer %s %s: %s", request.command, request.path, exc)
            data, response = b"", None
        finally:
            connection.close()
        try:
            if response is None:
                request.send_error(502, "the local AWS backend (moto) did not answer")
                return
            request.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    request.send_header(key, value)
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The caller went away (a worker killed or timed out mid-call): nobody to answer.
            log.debug("client left before %s %s was answered", request.command, request.path)

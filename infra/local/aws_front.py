"""The local AWS endpoint: Lambda Invoke served here, everything else sent to moto.

moto cannot run Lambda code, and its Step Functions interpreter invokes Lambda
through ``http://localhost:$MOTO_PORT``. So the port every client (boto3,
``aws --endpoint-url``, moto's interpreter) knows as "AWS" is this front: it
answers the Lambda Invoke API by running the real handler in the local Lambda
runtime, and forwards every other request, byte for byte, to moto's server.
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
from urllib.parse import unquote

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


Invoker = Callable[[str, Any], InvokeResultLike]


def function_name(identifier: str) -> str:
    """A function name from a name, a partial ARN or a full ARN (qualifier dropped)."""
    value = unquote(identifier)
    if value.startswith("arn:"):
        parts = value.split(":")
        return parts[6] if len(parts) > 6 else value
    if ":function:" in value:  # 123456789012:function:name
        value = value.split(":function:", 1)[1]
    return value.split(":", 1)[0]


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
    ) -> None:
        #: Where everything but Lambda Invoke goes (settable: moto may start after the front).
        self.moto_port = moto_port
        self._invoke = invoke
        self._known = known
        super().__init__("aws-front", self._handle, host=host, port=port, log=log)

    # -- request handling ---------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        match = INVOKE_PATH.match(request.path)
        if request.command == "POST" and match and self._known(function_name(match["name"])):
            self._lambda_invoke(request, function_name(match["name"]), body)
        else:
            self._forward(request, body)

    def _lambda_invoke(self, request: BaseHTTPRequestHandler, name: str, body: bytes) -> None:
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
                target=self._invoke, args=(name, event), daemon=True, name=f"async-{name}"
            ).start()
            self._send(request, 202, None, {"x-amzn-RequestId": str(uuid.uuid4())})
            return
        result = self._invoke(name, event)
        headers = {"x-amzn-RequestId": result.request_id, "X-Amz-Executed-Version": "$LATEST"}
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

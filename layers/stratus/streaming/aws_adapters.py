"""AWS adapters of the streaming ports: the WebSocket management API and Lambda Invoke.

The management API client is created once per process with ``endpoint_url`` =
``STRATUS_WS_CALLBACK_URL`` (AWS: ``https://{api}.execute-api.{region}.amazonaws.com/
{stage}``; locally the local cloud's ``@connections`` endpoint). Each frame is one
``PostToConnection`` (an HTTPS request, no DynamoDB).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from botocore.exceptions import ClientError

from stratus.aws import CONFIG, AwsClients
from stratus.errors import ConfigurationError
from stratus.streaming.ports import ConnectionGone


class ManagementApiPoster:
    def __init__(self, clients: AwsClients, endpoint_url: str) -> None:
        self._clients = clients
        self._endpoint_url = endpoint_url
        self._client: Any = None
        self._lock = threading.Lock()

    def _api(self) -> Any:
        if self._client is None:
            if not self._endpoint_url:
                raise ConfigurationError("STRATUS_WS_CALLBACK_URL is not set")
            with self._lock:
                if self._client is None:
                    self._client = self._clients.session.client(
                        "apigatewaymanagementapi", endpoint_url=self._endpoint_url, config=CONFIG
                    )
        return self._client

    def post(self, connection_id: str, frame: dict[str, Any]) -> None:
        data = json.dumps(frame, separators=(",", ":"), default=str).encode()
        try:
            self._api().post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "GoneException" or status == 410:
                raise ConnectionGone(connection_id) from None
            raise


class LambdaAgentInvoker:
    """``lambda:Invoke`` with ``InvocationType=Event`` (the function name may carry the
    ``:live`` alias or be an alias ARN)."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    def invoke_async(self, function: str, event: dict[str, Any]) -> None:
        self._clients.client("lambda").invoke(
            FunctionName=function,
            InvocationType="Event",
            Payload=json.dumps(event, separators=(",", ":"), default=str).encode(),
        )

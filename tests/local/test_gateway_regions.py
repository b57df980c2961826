"""The local API Gateway answers a wrong-region key as the stage does: 403 ``wrong_region``.

The real authorizer handler decides (it needs no table for this refusal); the gateway
turns its Deny into the ACCESS_DENIED gateway response, substituted from its context.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from functions.handlers import authorizer
from infra.local.gateway import LocalApiGateway
from infra.local.lambda_types import InvokeResult
from infra.topology import api_routes, gateway_error
from stratus.tenant_keys import new_api_key
from tests.local.test_gateway import exchange, request
from tests.support import FakeLambdaContext


def _runtime(name: str, event: Any) -> InvokeResult:
    if name == "auth":
        return InvokeResult(
            "r", authorizer.lambda_handler(event, FakeLambdaContext()), None, 1, False
        )
    payload = {"statusCode": 200, "headers": {}, "body": json.dumps({"ok": True})}
    return InvokeResult("r", payload, None, 1.0, False)


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalApiGateway]:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    from tests.conftest import reset_process_state

    reset_process_state()
    functions = {"platform": "platform", "agent:triage": "triage"}
    server = LocalApiGateway(api_routes(["triage"]), functions, _runtime, authorizer="auth").start()
    yield server
    server.stop()
    reset_process_state()


def test_a_key_of_another_region_gets_the_stage_403(gateway: LocalApiGateway) -> None:
    key = new_api_key("us-east-1")
    raw = request("POST", "/v1/agents/triage/invoke", b"{}", f"Authorization: Bearer {key}\r\n")
    reply = exchange(gateway, raw)
    assert reply.status == 403
    error = reply.body["error"]
    expected = gateway_error("ACCESS_DENIED")
    assert (error["code"], error["message"]) == ("wrong_region", expected.message)
    assert error["details"] == {"home_region": "us-east-1"}
    assert error["request_id"] == reply.headers["x-amzn-requestid"]

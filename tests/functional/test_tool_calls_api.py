"""Tool calls in the API's answers: invoke and session turns return ``tool_calls``
(name and the arguments the model passed), and idempotent repeats return them unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from functions.handlers import api
from infra.local import moto_atomic
from infra.local.fake_model import FakeModelServer, Reply
from stratus.contracts import InvokeResponse, SessionTurnResponse
from tests.support import api_event, call


@pytest.fixture(autouse=True)
def atomic_moto() -> Iterator[None]:
    moto_atomic.install()
    yield
    moto_atomic.uninstall()


def _put_order(cloud: dict[str, Any], tenant_id: str, order_id: str) -> None:
    boto3.resource("dynamodb").Table(cloud["tables"]["orders"]).put_item(
        Item={
            "tenant_id": tenant_id,
            "order_id": order_id,
            "status": "in_transit",
            "carrier": "DHL",
            "eta": "2026-11-24",
            "items": ["running shoes"],
        }
    )


def _request(method: str, path: str, body: Any, **kwargs: Any) -> Any:
    return call(api.lambda_handler, api_event(None, path=path, method=method, body=body, **kwargs))


def test_an_invoke_with_a_tool_call_returns_the_call_with_its_arguments(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    serve_agent("order_status")
    _put_order(cloud, "tenant-a", "A-1001")
    reply = call(
        api.lambda_handler,
        api_event(
            "order_status", body={"input": "Where is my order A-1001?"}, tenant_id="tenant-a"
        ),
    )
    assert reply.status == 200, reply.body
    assert reply.body["tool_calls"] == [
        {"name": "lookup_order", "arguments": {"order_id": "A-1001"}}
    ]
    assert "in_transit" in reply.body["output"]  # the call really ran
    InvokeResponse.model_validate(reply.body)

    # A scripted call: the arguments are the model's, as it sent them (one call per entry).
    fake_model.script(
        Reply(tool_calls=[{"name": "lookup_order", "arguments": {"order_id": "C-3003"}}]),
        Reply(content="No such order."),
    )
    scripted = call(api.lambda_handler, api_event("order_status", body={"input": "Where?"}))
    assert scripted.status == 200, scripted.body
    assert scripted.body["tool_calls"] == [
        {"name": "lookup_order", "arguments": {"order_id": "C-3003"}}
    ]


def test_an_answer_without_tools_has_no_tool_calls(
    serve_agent: Any, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")
    reply = call(api.lambda_handler, api_event("triage", body={"input": "Where is my order?"}))
    assert reply.status == 200 and reply.body["tool_calls"] == []


def test_a_session_turn_returns_its_tool_calls_and_a_replay_returns_the_same_body(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    serve_agent("support")
    _put_order(cloud, "tenant-a", "A-1001")
    base = "/v1/agents/support/sessions"
    created = _request("POST", base, {"metadata": {}}, tenant_id="tenant-a")
    assert created.status == 201, created.body
    path = f"{base}/{created.body['session_id']}/messages"
    headers = {"Idempotency-Key": "turn-1"}
    body = {"message": "Where is my order A-1001?"}
    first = _request("POST", path, body, tenant_id="tenant-a", headers=headers)
    assert first.status == 200, first.body
    assert first.body["tool_calls"] == [
        {"name": "lookup_order", "arguments": {"order_id": "A-1001"}}
    ]
    SessionTurnResponse.model_validate(first.body)
    calls = fake_model.call_count()
    again = _request("POST", path, body, tenant_id="tenant-a", headers=headers)
    assert again.status == 200 and again.body == first.body
    assert fake_model.call_count() == calls  # replayed, not run again
    second = _request("POST", path, {"message": "Thanks!"}, tenant_id="tenant-a")
    assert second.status == 200 and second.body["turn"] == 2
    assert isinstance(second.body["tool_calls"], list)

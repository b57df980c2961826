"""Tool permissions per role, the tool audit events and end-customer scoping, through the
API handler against moto and the real openai client over HTTP to the fake model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bench.roundtrips import recording
from functions.handlers import api
from infra.local import moto_atomic
from infra.local.fake_model import FakeModelServer, Reply
from tests.support import api_event, call


@pytest.fixture(autouse=True)
def atomic_moto() -> Iterator[None]:
    moto_atomic.install()
    yield
    moto_atomic.uninstall()


def put_order(cloud: dict[str, Any], order_id: str, customer_id: str) -> None:
    boto3.resource("dynamodb").Table(cloud["tables"]["orders"]).put_item(
        Item={
            "tenant_id": "tenant-a",
            "order_id": order_id,
            "status": "in_transit",
            "carrier": "DHL",
            "items": ["running shoes"],
            "customer_id": customer_id,
        }
    )


def invoke(role: str = "", customer_id: str = "", **kwargs: Any) -> Any:
    event = api_event("order_status", body={"input": "Where is my order?"}, **kwargs)
    event["requestContext"]["authorizer"].update(
        {"role": role, "customer_id": customer_id, "key_id": "key_caller"}
    )
    return call(api.lambda_handler, event)


def audit(tenant: str = "tenant-a", **query: str) -> Any:
    event = api_event(None, path="/v1/audit", method="GET", tenant_id=tenant)
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    return call(api.lambda_handler, event)


def scripted_lookup(fake_model: FakeModelServer, order_id: str) -> None:
    fake_model.script(
        Reply(tool_calls=[{"name": "lookup_order", "arguments": {"order_id": order_id}}]),
        Reply(content="Done."),
    )


def tool_results(fake_model: FakeModelServer) -> list[dict[str, Any]]:
    """The tool messages the model received, parsed."""
    last = fake_model.requests[-1].body["messages"]
    return [json.loads(m["content"]) for m in last if m["role"] == "tool"]


def digest(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_a_viewer_is_never_offered_lookup_order_and_a_call_anyway_never_runs(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    serve_agent("order_status")
    put_order(cloud, "A-1001", "cust-1")
    scripted_lookup(fake_model, "A-1001")  # the model asks for the tool anyway
    with recording() as trace:
        reply = invoke(role="viewer")
    assert reply.status == 200, reply.body
    assert trace.requests("dynamodb", table="orders") == 0  # the tool never ran
    first = fake_model.requests[0].body
    assert not first.get("tools")  # a viewer is offered no tool at all
    assert tool_results(fake_model) == [
        {
            "error": "tool_not_permitted",
            "message": "the caller's role may not use the tool lookup_order",
        }
    ]
    # The request's events went out in one write, after the answer.
    assert [c.operation for c in trace.of("dynamodb", table="audit")] == ["BatchWriteItem"]
    page = audit(type="tool.denied")
    assert page.status == 200, page.body
    (event,) = page.body["events"]
    assert event["actor"] == "key_caller" and event["request_id"]
    assert event["details"] == {
        "agent": "order_status",
        "tool": "lookup_order",
        "args_sha256": digest({"order_id": "A-1001"}),
        "role": "viewer",
        "allowed": False,
    }


def test_an_executed_tool_is_audited_with_a_hash_and_never_its_arguments(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    serve_agent("order_status")
    put_order(cloud, "A-1001", "cust-1")
    scripted_lookup(fake_model, "A-1001")
    reply = invoke(role="support")
    assert reply.status == 200, reply.body
    assert fake_model.requests[0].body["tools"][0]["function"]["name"] == "lookup_order"
    assert tool_results(fake_model)[0]["found"] is True
    (event,) = audit(type="tool.executed").body["events"]
    details = event["details"]
    assert details["tool"] == "lookup_order" and details["allowed"] is True
    assert details["args_sha256"] == digest({"order_id": "A-1001"})
    assert details["outcome"] == "ok" and details["result_bytes"] > 50
    assert details["duration_ms"] >= 0 and details["role"] == "support"
    assert "A-1001" not in json.dumps(event)  # the arguments never reach the trail


def test_a_key_bound_to_a_customer_finds_only_that_customers_orders(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    serve_agent("order_status")
    put_order(cloud, "A-1001", "cust-1")
    scripted_lookup(fake_model, "A-1001")
    assert invoke(role="customer", customer_id="cust-1").status == 200
    assert tool_results(fake_model)[0]["found"] is True
    scripted_lookup(fake_model, "A-1001")
    assert invoke(role="customer", customer_id="cust-2").status == 200
    other = tool_results(fake_model)
    scripted_lookup(fake_model, "Z-9999")
    assert invoke(role="customer", customer_id="cust-2").status == 200
    missing = tool_results(fake_model)
    # Another customer's order looks exactly like a missing one.
    assert other == [{"found": False, "order_id": "A-1001", "error": "order_not_found"}]
    assert missing == [{"found": False, "order_id": "Z-9999", "error": "order_not_found"}]


def test_a_request_that_records_nothing_writes_nothing_to_the_trail(
    serve_agent: Any, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")  # no tools: nothing to audit
    with recording() as trace:
        reply = call(api.lambda_handler, api_event("triage", body={"input": "hello"}))
    assert reply.status == 200, reply.body
    assert trace.requests("dynamodb", table="audit") == 0


def test_a_session_turn_runs_its_tools_as_the_sender(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    serve_agent("support")
    put_order(cloud, "A-1001", "cust-1")
    base = "/v1/agents/support/sessions"
    created = call(api.lambda_handler, api_event(None, path=base, body={"metadata": {}}))
    assert created.status == 201, created.body
    path = f"{base}/{created.body['session_id']}/messages"
    for role, headers in (("viewer", {}), ("viewer", {"Idempotency-Key": "t-1"})):
        scripted_lookup(fake_model, "A-1001")
        event = api_event(None, path=path, body={"message": "Where is A-1001?"}, headers=headers)
        event["requestContext"]["authorizer"]["role"] = role
        with recording() as trace:
            reply = call(api.lambda_handler, event)
        assert reply.status == 200, reply.body
        assert trace.requests("dynamodb", table="orders") == 0
        assert tool_results(fake_model)[0]["error"] == "tool_not_permitted"
    scripted_lookup(fake_model, "A-1001")
    event = api_event(None, path=path, body={"message": "And now?"})
    event["requestContext"]["authorizer"].update({"role": "customer", "customer_id": "cust-2"})
    assert call(api.lambda_handler, event).status == 200
    assert tool_results(fake_model)[0]["error"] == "order_not_found"
    denied = audit(type="tool.denied").body["events"]
    assert [e["details"]["role"] for e in denied] == ["viewer", "viewer"]

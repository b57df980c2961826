"""Streaming over WebSockets (issue 17), in process: the stream router and the agent
function's real handlers on moto, the real openai client streaming from the offline fake
model over HTTP; the management API is the in-memory poster, Lambda's async invoke the
in-memory invoker (run here, in order)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from bench.roundtrips import recording
from functions.handlers import api, stream, stream_authorizer
from infra.local.fake_model import FakeModelServer
from stratus import composition
from stratus.budgets import from_nano
from stratus.streaming import MemoryInvoker, MemoryPoster, StreamRouter
from tests.support import FakeLambdaContext, api_event, call

TENANT = "tenant-a"
EVERY_SCOPE = "invoke sessions jobs jobs:approve usage:read audit:read admin"
FUNCTIONS = {name: f"stratus-test-{name}:live" for name in ("triage", "order_status", "support")}


@dataclass
class Socket:
    """One WebSocket connection as the functions see it."""

    poster: MemoryPoster
    invoker: MemoryInvoker
    connection_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    scopes: str = EVERY_SCOPE

    def event(self, body: Any, route: str = "$default") -> dict[str, Any]:
        return {
            "requestContext": {
                "routeKey": route,
                "eventType": "MESSAGE",
                "connectionId": self.connection_id,
                "requestId": str(uuid.uuid4()),
                "authorizer": {
                    "principalId": TENANT,
                    "tenant_id": TENANT,
                    "key_id": "key_" + "0" * 20,
                    "scopes": self.scopes,
                    "role": "",
                    "customer_id": "",
                },
            },
            "body": body if isinstance(body, str) else json.dumps(body),
            "isBase64Encoded": False,
        }

    def send(self, body: Any) -> list[dict[str, Any]]:
        """Send a frame; run the agent function it started; the frames the client got."""
        route = body.get("action", "$default") if isinstance(body, dict) else "$default"
        assert stream.lambda_handler(self.event(body, route), FakeLambdaContext()) == {
            "statusCode": 200
        }
        while self.invoker.calls:
            _, event = self.invoker.calls.pop(0)
            api.lambda_handler(event, FakeLambdaContext())
        return self.frames()

    def frames(self) -> list[dict[str, Any]]:
        return list(self.poster.frames.get(self.connection_id, []))


@pytest.fixture
def connect(
    serve_agent: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Socket]:
    """``connect(agent)``: this process serves ``agent`` and routes its stream."""
    monkeypatch.setenv("STRATUS_STREAM_FUNCTIONS", json.dumps(FUNCTIONS))

    def _connect(agent: str, **kwargs: Any) -> Socket:
        serve_agent(agent)
        runtime = composition.current()
        poster, invoker = MemoryPoster(), MemoryInvoker()
        runtime.__dict__["stream_poster"] = poster
        runtime.__dict__["stream_router"] = StreamRouter(
            runtime.streams,
            poster,
            invoker,
            functions=runtime.settings.stream_functions,
            audit=runtime.audit,
            clock=runtime.clock,
        )
        return Socket(poster, invoker, **kwargs)

    return _connect


def rest_invoke(agent: str, text: str) -> dict[str, Any]:
    reply = call(api.lambda_handler, api_event(agent, body={"input": text}))
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


def deltas_then_done(frames: list[dict[str, Any]], client_id: str) -> dict[str, Any]:
    assert all(f["id"] == client_id for f in frames)
    *before, done = frames
    assert done["type"] == "done", done
    assert sum(f["type"] == "delta" for f in before) >= 2
    return done


def same_answer(done: dict[str, Any], rest: dict[str, Any]) -> None:
    """The done frame carries the REST answer's fields, usage and cost equal."""
    streamed = {k: v for k, v in done.items() if k not in ("type", "id")}
    assert set(streamed) == set(rest)
    assert streamed["usage"] == rest["usage"]
    assert streamed["cost_usd"] == rest["cost_usd"] > 0
    for name in set(rest) - {"request_id"}:
        assert streamed[name] == rest[name], name


def test_a_streamed_invoke_sends_deltas_then_the_rest_answer(
    connect: Callable[..., Socket], fake_model: FakeModelServer
) -> None:
    socket = connect("triage")
    text = "Where is my order A-1001?"
    frames = socket.send({"action": "invoke", "id": "c-1", "agent": "triage", "input": text})
    done = deltas_then_done(frames, "c-1")
    # Structured output streams its JSON text: the deltas put together are the answer.
    joined = "".join(f["text"] for f in frames if f["type"] == "delta")
    assert json.loads(joined) == done["output"]
    assert done["output"]["category"] == "order_status"
    (seen,) = fake_model.requests
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    same_answer(done, rest_invoke("triage", text))


def test_a_streamed_tool_agent_sends_tool_frames(connect: Callable[..., Socket]) -> None:
    socket = connect("order_status")
    text = "Where is my order A-1001?"
    frames = socket.send({"action": "invoke", "id": "c-2", "agent": "order_status", "input": text})
    done = deltas_then_done(frames, "c-2")
    tools = [(f["name"], f["status"]) for f in frames if f["type"] == "tool"]
    assert tools == [("lookup_order", "started"), ("lookup_order", "ok")]
    first_tool = next(i for i, f in enumerate(frames) if f["type"] == "tool")
    assert all(f["type"] == "delta" for f in frames[first_tool + 2 : -1])
    assert done["output"].startswith("[fake model]")
    same_answer(done, rest_invoke("order_status", text))


def test_a_resent_frame_returns_the_finished_result_without_running_twice(
    connect: Callable[..., Socket], fake_model: FakeModelServer
) -> None:
    socket = connect("triage")
    frame = {"action": "invoke", "id": "c-3", "agent": "triage", "input": "I was billed twice"}
    first = socket.send(frame)[-1]
    calls = fake_model.call_count()
    again = connect("triage")  # a reconnect: another connection, the same client id
    assert again.send(frame) == [first]
    assert fake_model.call_count() == calls


def budget_item(pk: str) -> dict[str, Any]:
    table = composition.current().settings.budgets_table
    item = boto3.resource("dynamodb").Table(table).get_item(Key={"pk": pk}, ConsistentRead=True)
    return dict(item.get("Item") or {})


def session(agent: str, method: str = "POST", sid: str = "", body: Any = None) -> Any:
    path = f"/v1/agents/{agent}/sessions" + (f"/{sid}" if sid else "")
    return call(api.lambda_handler, api_event(agent, path=path, method=method, body=body))


def test_a_client_gone_after_the_first_delta_leaves_budget_and_session_consistent(
    connect: Callable[..., Socket], fake_model: FakeModelServer
) -> None:
    socket = connect("support")
    created = session("support", body={})
    assert created.status == 201, created.body
    sid = created.body["session_id"]
    socket.poster.gone_after_deltas[socket.connection_id] = 1  # it leaves after one delta
    frame = {
        "action": "message",
        "id": "m-1",
        "agent": "support",
        "session_id": sid,
        "message": "My order A-1001 has not arrived",
    }
    frames = socket.send(frame)
    assert [f["type"] for f in frames] == ["tool", "tool", "delta"]
    # The turn ran to its end and committed once.
    view = session("support", method="GET", sid=sid)
    assert view.status == 200, view.body
    assert [m["role"] for m in view.body["messages"]] == ["user", "assistant"]
    # Its final frame is stored: a reconnect resending the id gets it, nothing runs again.
    calls = fake_model.call_count()
    again = connect("support")
    (done,) = again.send(frame)
    assert done["type"] == "done" and done["turn"] == 1 and fake_model.call_count() == calls
    assert view.body["messages"][1]["content"] == done["reply"]
    # The budget settled to the real usage: no reservation left open, spent == the cost.
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    item = budget_item(f"TENANT#{TENANT}#DAY#{day}")
    assert from_nano(item["committed"]) == from_nano(item["spent"])
    assert float(from_nano(item["spent"])) == pytest.approx(done["cost_usd"], abs=1e-8)
    assert done["cost_usd"] > 0


def test_a_streamed_session_turn_matches_the_rest_turn(connect: Callable[..., Socket]) -> None:
    socket = connect("support")
    one, two = (session("support", body={}).body["session_id"] for _ in range(2))
    text = "Where is my order A-1001?"
    frames = socket.send(
        {"action": "message", "id": "m-2", "agent": "support", "session_id": one, "message": text}
    )
    done = deltas_then_done(frames, "m-2")
    path = f"/v1/agents/support/sessions/{two}/messages"
    rest = call(api.lambda_handler, api_event("support", path=path, body={"message": text}))
    assert rest.status == 200, rest.body
    same_answer(done, rest.body)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "invalid_json"),
        ({"action": "dance", "id": "x"}, "not_found"),
        ({"action": "invoke", "id": "x", "agent": "triage"}, "validation_error"),
        (
            {"action": "invoke", "id": "x", "agent": "triage", "input": "y" * 33_000},
            "payload_too_large",
        ),
        ({"action": "invoke", "id": "x", "agent": "returns", "input": "y"}, "agent_not_found"),
        (
            {"action": "message", "id": "x", "agent": "triage", "session_id": "s1", "message": "y"},
            "not_streamable",
        ),
    ],
)
def test_bad_frames_get_error_frames_and_the_connection_stays_usable(
    connect: Callable[..., Socket], body: Any, code: str
) -> None:
    socket = connect("triage")
    (error,) = socket.send(body)
    assert error["type"] == "error" and error["error"]["code"] == code
    frames = socket.send({"action": "invoke", "id": "ok", "agent": "triage", "input": "hello"})
    assert frames[-1]["type"] == "done"


def test_a_key_without_the_scope_is_forbidden(connect: Callable[..., Socket]) -> None:
    socket = connect("triage", scopes="sessions")
    (error,) = socket.send({"action": "invoke", "id": "f", "agent": "triage", "input": "x"})
    assert error["error"] == {
        "code": "forbidden",
        "message": "this key lacks the scope 'invoke'",
        "details": {"missing_scope": "invoke"},
    }


def test_a_runtime_error_is_an_error_frame_with_its_code(connect: Callable[..., Socket]) -> None:
    socket = connect("support")
    frame = {
        "action": "message",
        "id": "e",
        "agent": "support",
        "session_id": "nope",
        "message": "x",
    }
    (error,) = socket.send(frame)
    assert error["type"] == "error" and error["error"]["code"] == "session_not_found"


def test_the_round_trips_a_streamed_request_adds(connect: Callable[..., Socket]) -> None:
    """DynamoDB round trips: the router's claim (1); the agent function's REST path
    (pre-call wave, post-call wave) plus the final frame's PutItem (1)."""
    socket = connect("triage")
    rest_invoke("triage", "warm the process")  # keys, breaker, prices: loaded once
    route = {"action": "invoke", "id": "rt", "agent": "triage", "input": "hello"}
    with recording(latency_s=0.05) as routed:
        stream.lambda_handler(socket.event(route, "invoke"), FakeLambdaContext())
    ((_, event),) = socket.invoker.calls
    socket.invoker.calls.clear()
    with recording(latency_s=0.05) as streamed:
        api.lambda_handler(event, FakeLambdaContext())
    with recording(latency_s=0.05) as rest:
        rest_invoke("triage", "hello again")
    assert routed.describe("dynamodb") == ["1: PutItem(stratus-test-streams)"]
    extra = streamed.round_trips("dynamodb") - rest.round_trips("dynamodb")
    assert extra == 1, (streamed.describe("dynamodb"), rest.describe("dynamodb"))
    last = streamed.round_trips("dynamodb")
    assert streamed.describe("dynamodb")[-1] == f"{last}: PutItem(stratus-test-streams)"


# -- connect: the authorizer and tickets -------------------------------------------------------


def connect_event(
    *, headers: dict[str, str] | None = None, ticket: str | None = None
) -> dict[str, Any]:
    return {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:eu-west-1:123456789012:abc123/test/$connect",
        "headers": headers or {},
        "queryStringParameters": {"ticket": ticket} if ticket is not None else None,
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "requestId": "r"},
    }


def tenant_key(scopes: list[str] | None = None) -> tuple[str, str]:
    tenants = composition.current().tenants
    tenant, key = tenants.create("streamers", scopes=scopes)
    return tenant.tenant_id, key


def effect(answer: dict[str, Any]) -> str:
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Resource"].endswith("/test/$connect")
    return str(statement["Effect"])


def test_connect_with_the_authorization_header(serve_agent: Callable[[str], None]) -> None:
    serve_agent("triage")
    tenant_id, key = tenant_key(["invoke"])
    answer = stream_authorizer.lambda_handler(
        connect_event(headers={"authorization": f"Bearer {key}"}), FakeLambdaContext()
    )
    assert effect(answer) == "Allow"
    assert answer["context"]["tenant_id"] == tenant_id
    assert answer["context"]["scopes"] == "invoke"
    assert set(answer["context"]) == {
        "tenant_id",
        "key_id",
        "scopes",
        "role",
        "customer_id",
        "tier",
    }
    for bad in ({"Authorization": "Bearer sk-nope"}, {}):
        refused = stream_authorizer.lambda_handler(connect_event(headers=bad), FakeLambdaContext())
        assert effect(refused) == "Deny" and "context" not in refused


def test_connect_with_a_single_use_ticket(serve_agent: Callable[[str], None]) -> None:
    serve_agent("triage")
    tenant_id, _ = tenant_key(["invoke", "sessions"])
    event = api_event(None, path="/v1/stream-tickets", body=None, tenant_id=tenant_id)
    event["requestContext"]["authorizer"]["scopes"] = "invoke sessions"
    issued = call(api.lambda_handler, event)
    assert issued.status == 201, issued.body
    assert set(issued.body) == {"ticket", "expires_at"}
    expires = datetime.fromisoformat(issued.body["expires_at"].replace("Z", "+00:00"))
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 60
    ticket = issued.body["ticket"]
    answer = stream_authorizer.lambda_handler(connect_event(ticket=ticket), FakeLambdaContext())
    assert effect(answer) == "Allow"
    assert answer["context"]["tenant_id"] == tenant_id
    assert answer["context"]["scopes"] == "invoke sessions"
    used = stream_authorizer.lambda_handler(connect_event(ticket=ticket), FakeLambdaContext())
    assert effect(used) == "Deny"
    forged = stream_authorizer.lambda_handler(connect_event(ticket="stk_x"), FakeLambdaContext())
    assert effect(forged) == "Deny"

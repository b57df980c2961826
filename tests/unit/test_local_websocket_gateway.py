"""The local WebSocket API (``infra.local.websocket_gateway``) as API Gateway behaves.

A real ``websockets`` client against the real server, the management API through the
real AWS front with boto3's ``apigatewaymanagementapi`` client; only the Lambda runtime
is replaced by a recording invoker (the handlers are S1's; the e2e test runs them).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.local.aws_front import AwsFront
from infra.local.websocket_gateway import LocalWebSocketGateway, TokenBucket, select_route
from infra.topology.streaming import WEBSOCKET_ROUTES

ALLOW = "Allow"


@dataclass
class Result:
    payload: Any
    error: dict[str, Any] | None = None
    request_id: str = "r"


class Recorder:
    """Stands in for the Lambda runtime: records every event, answers like the handlers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.effect = ALLOW
        self.authorizer_fails = False
        self.router_fails_on: str | None = None
        self.connect_status = 200
        self.disconnected = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, name: str, event: dict[str, Any]) -> Result:
        with self.lock:
            self.events.append((name, event))
        if name == "auth":
            if self.authorizer_fails:
                return Result(None, {"errorMessage": "Unauthorized", "errorType": "Exception"})
            return Result(
                {
                    "principalId": "key-1",
                    "policyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Action": "execute-api:Invoke",
                                "Effect": self.effect,
                                "Resource": event["methodArn"],
                            }
                        ],
                    },
                    "context": {"tenant_id": "t-1", "key_id": "key-1", "scopes": "invoke"},
                }
            )
        route = event["requestContext"]["routeKey"]
        if route == "$disconnect":
            self.disconnected.set()
        if route == "$connect":
            return Result({"statusCode": self.connect_status})
        if route == self.router_fails_on:
            return Result(None, {"errorMessage": "boom", "errorType": "RuntimeError"})
        return Result({"statusCode": 200})

    def of(self, route: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                e
                for n, e in self.events
                if n == "router" and e["requestContext"]["routeKey"] == route
            ]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def gateway(recorder: Recorder) -> Iterator[LocalWebSocketGateway]:
    with LocalWebSocketGateway(
        recorder, router="router", authorizer="auth", stage="dev", port=0
    ) as ws:
        yield ws


@pytest.fixture
def management(gateway: LocalWebSocketGateway) -> Iterator[Any]:
    front = AwsFront(0, lambda *a: None, known=lambda n: False)  # type: ignore[arg-type]
    front.connections = gateway.manage
    front.start()
    try:
        yield boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=f"{front.url}/@ws/dev",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
    finally:
        front.stop()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_route_selection_is_the_bodys_action() -> None:
    assert select_route('{"action": "invoke", "id": "1"}') == "invoke"
    assert select_route('{"action": "message"}') == "message"
    assert select_route('{"action": "nope"}') == "$default"
    assert select_route('{"action": "$connect"}') == "$default"
    assert select_route("not json") == "$default"
    assert select_route("[1, 2]") == "$default"
    assert select_route('{"action": 3}') == "$default"
    assert set(WEBSOCKET_ROUTES) == {"$connect", "$disconnect", "$default", "invoke", "message"}


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 2, clock=lambda: now[0])
    assert bucket.take() and bucket.take() and not bucket.take()
    now[0] = 0.5  # one token back
    assert bucket.take() and not bucket.take()


def test_connect_runs_the_authorizer_then_connect_with_its_context(
    gateway: LocalWebSocketGateway, recorder: Recorder
) -> None:
    async def scenario() -> None:
        async with connect(
            f"{gateway.url}/?ticket=abc", additional_headers={"Authorization": "Bearer k"}
        ) as ws:
            assert gateway.connection_ids
            await ws.send(json.dumps({"action": "invoke", "id": "c1", "agent": "triage"}))
            await ws.send("not json")
            await ws.send(json.dumps({"action": "message", "id": "c2"}))
            await ws.send(json.dumps({"action": "other", "id": "c3"}))
            # A management call waits for its frame: a round trip proves the sends arrived.
            for _ in range(200):
                if len(recorder.of("$default")) == 2 and recorder.of("message"):
                    break
                await asyncio.sleep(0.02)

    run(scenario())
    (auth_name, auth_event), *_ = recorder.events
    assert auth_name == "auth" and auth_event["type"] == "REQUEST"
    assert auth_event["methodArn"].endswith("/dev/$connect")
    assert auth_event["queryStringParameters"] == {"ticket": "abc"}
    assert auth_event["headers"]["Authorization"] == "Bearer k"
    context = auth_event["requestContext"]
    for key in ("connectionId", "routeKey", "eventType", "domainName", "stage", "apiId"):
        assert context[key], key
    assert (context["routeKey"], context["eventType"], context["stage"]) == (
        "$connect",
        "CONNECT",
        "dev",
    )
    (connected,) = recorder.of("$connect")
    assert connected["requestContext"]["authorizer"]["tenant_id"] == "t-1"
    assert connected["requestContext"]["authorizer"]["principalId"] == "key-1"
    assert connected["requestContext"]["connectionId"] == context["connectionId"]
    (invoke,) = recorder.of("invoke")
    assert json.loads(invoke["body"])["id"] == "c1" and invoke["isBase64Encoded"] is False
    assert invoke["requestContext"]["eventType"] == "MESSAGE"
    assert invoke["requestContext"]["authorizer"]["scopes"] == "invoke"
    assert invoke["requestContext"]["connectionId"] == context["connectionId"]
    assert [e["body"] for e in recorder.of("$default")] == [
        "not json",
        '{"action": "other", "id": "c3"}',
    ]
    assert recorder.disconnected.wait(10)
    (gone,) = recorder.of("$disconnect")
    assert gone["requestContext"]["eventType"] == "DISCONNECT"
    assert not gateway.connection_ids


@pytest.mark.parametrize(("effect", "fails", "status"), [("Deny", False, 403), (ALLOW, True, 401)])
def test_a_refused_connect_is_an_http_answer(
    gateway: LocalWebSocketGateway, recorder: Recorder, effect: str, fails: bool, status: int
) -> None:
    recorder.effect, recorder.authorizer_fails = effect, fails

    async def scenario() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gateway.url):
                pass
        return refused.value

    refused = run(scenario())
    assert refused.response.status_code == status
    assert json.loads(refused.response.body)["error"]["code"] in ("forbidden", "unauthorized")
    assert not recorder.of("$connect")  # the router never saw a refused connection


def test_connect_refused_by_the_router(gateway: LocalWebSocketGateway, recorder: Recorder) -> None:
    recorder.connect_status = 403

    async def scenario() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gateway.url):
                pass
        return refused.value.response.status_code

    assert run(scenario()) == 403


def test_management_api_posts_describes_and_closes(
    gateway: LocalWebSocketGateway, management: Any
) -> None:
    async def scenario() -> None:
        async with connect(gateway.url) as ws:
            (cid,) = gateway.connection_ids
            loop = asyncio.get_running_loop()
            for text in ('{"type": "delta", "id": "1", "text": "Hel"}', '{"type": "done"}'):
                post = functools.partial(management.post_to_connection, ConnectionId=cid, Data=text)
                await loop.run_in_executor(None, post)
            assert json.loads(await ws.recv())["text"] == "Hel"
            assert json.loads(await ws.recv())["type"] == "done"
            info = await loop.run_in_executor(
                None, lambda: management.get_connection(ConnectionId=cid)
            )
            assert info["Identity"]["SourceIp"] == "127.0.0.1" and info["ConnectedAt"]
            await loop.run_in_executor(None, lambda: management.delete_connection(ConnectionId=cid))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        for call in (
            lambda: management.post_to_connection(ConnectionId=cid, Data=b"x"),
            lambda: management.get_connection(ConnectionId=cid),
            lambda: management.post_to_connection(ConnectionId="unknown=", Data=b"x"),
        ):
            with pytest.raises(ClientError) as gone:
                call()
            assert gone.value.response["Error"]["Code"] == "GoneException"
            assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410

    run(scenario())


def test_a_failing_router_answers_and_keeps_the_connection(
    gateway: LocalWebSocketGateway, recorder: Recorder
) -> None:
    recorder.router_fails_on = "invoke"

    async def scenario() -> None:
        async with connect(gateway.url) as ws:
            await ws.send(json.dumps({"action": "invoke", "id": "x"}))
            answer = json.loads(await ws.recv())
            assert answer["message"] == "Internal server error" and answer["connectionId"]
            recorder.router_fails_on = None
            await ws.send(json.dumps({"action": "invoke", "id": "y"}))
            await ws.ping()
            for _ in range(200):
                if len(recorder.of("invoke")) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(recorder.of("invoke")) == 2

    run(scenario())


def test_messages_over_the_stage_throttle_get_an_error_frame(
    gateway: LocalWebSocketGateway, recorder: Recorder
) -> None:
    async def scenario() -> None:
        async with connect(gateway.url) as ws:
            gateway.bucket = TokenBucket(1e-9, 1)  # one more message, then none
            await ws.send(json.dumps({"action": "invoke", "id": "a"}))
            await ws.send(json.dumps({"action": "invoke", "id": "b"}))
            frame = json.loads(await ws.recv())
            assert frame == {
                "type": "error",
                "id": "b",
                "error": {"code": "throttled", "message": frame["error"]["message"]},
            }
            # Throttled connections are refused 429.
            with pytest.raises(InvalidStatus) as refused:
                async with connect(gateway.url):
                    pass
            assert refused.value.response.status_code == 429
            # "a" reaches the router on the gateway's pool: wait for it, not for a sleep.
            for _ in range(500):
                if recorder.of("invoke"):
                    break
                await asyncio.sleep(0.02)

    run(scenario())
    assert [json.loads(e["body"])["id"] for e in recorder.of("invoke")] == ["a"]

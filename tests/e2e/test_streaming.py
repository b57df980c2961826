"""Streamed replies over the local WebSocket API (issue 17), end to end.

Real clients (``websockets``) against the local cloud's WebSocket API, the real
authorizer, router and agent functions, the offline fake model streaming: a ticket
client and an ``Authorization`` client; deltas before ``done``; ``done`` costs what the
same request costs over REST; a client that leaves mid-stream leaves the budget settled
and the session turn committed once or not at all; bad frames get ``error`` frames on a
connection that stays usable; bad keys and used tickets are refused at connect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from infra.local.cloud import LocalCloud
from infra.local.demo import http
from stratus.budget_scopes import from_nano
from stratus.tenants import TenantStore
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")

TEXT = "Where is my order A-1001? It was due last week."


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


@pytest.fixture(scope="module")
def facts(cloud: LocalCloud) -> Any:
    assert cloud.facts is not None and cloud.facts.websocket_url.startswith("ws://127.0.0.1:")
    return cloud.facts


def _dynamodb(facts: Any) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=facts.aws_endpoint_url,
        region_name=facts.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


@pytest.fixture(scope="module")
def tenant(facts: Any) -> tuple[str, str]:
    """A tenant of this module's own (every scope): (tenant id, key)."""
    created, key = TenantStore(facts.tables["tenants"], _dynamodb(facts)).create("stream-e2e")
    return created.tenant_id, key


@pytest.fixture
def slow_stream(cloud: LocalCloud) -> Iterator[None]:
    """The fake model streams at a fixed, slow token rate for one test."""
    assert cloud.fake_model is not None
    cloud.fake_model.stream_delay_ms = 150
    try:
        yield
    finally:
        cloud.fake_model.stream_delay_ms = 0


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _ticket(facts: Any, key: str) -> str:
    reply = http("POST", f"{facts.api_url}/v1/stream-tickets", {}, _auth(key))
    assert reply.status == 201, reply.body
    assert set(reply.body) >= {"ticket", "expires_at"}
    assert datetime.fromisoformat(reply.body["expires_at"].replace("Z", "+00:00")) > datetime.now(
        UTC
    )
    return str(reply.body["ticket"])


async def _frames_until_final(ws: ClientConnection, client_id: str) -> list[dict[str, Any]]:
    """Frames of ``client_id`` up to its ``done`` or ``error`` frame."""
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if frame.get("id") != client_id:
            continue
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_ticket_client_streams_deltas_and_done_costs_what_rest_costs(
    facts: Any, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    rest = http("POST", f"{facts.api_url}/v1/agents/triage/invoke", {"input": TEXT}, _auth(key))
    assert rest.status == 200, rest.body
    ticket = _ticket(facts, key)

    async def scenario() -> list[dict[str, Any]]:
        async with connect(f"{facts.websocket_url}?ticket={ticket}") as ws:
            frame = {"action": "invoke", "id": "e2e-invoke-1", "agent": "triage", "input": TEXT}
            await ws.send(json.dumps(frame))
            return await _frames_until_final(ws, "e2e-invoke-1")

    frames = _run(scenario())
    *deltas, done = frames
    assert done["type"] == "done", done
    assert len([f for f in deltas if f["type"] == "delta"]) >= 2, frames
    assert all(f["type"] in ("delta", "tool") for f in deltas)
    assert "".join(f["text"] for f in deltas if f["type"] == "delta")
    # The same fields as the REST answer, and the same usage and cost.
    assert set(rest.body) <= set(done) | {"type", "id"}
    assert done["usage"] == rest.body["usage"]
    assert Decimal(str(done["cost_usd"])) == Decimal(str(rest.body["cost_usd"]))
    assert done["output"] == rest.body["output"]

    # The ticket was single use: a second connect with it is refused.
    async def reuse() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{facts.websocket_url}?ticket={ticket}"):
                pass
        return refused.value.response.status_code

    assert _run(reuse()) in (401, 403)


def test_bad_frames_get_error_frames_and_the_connection_stays_usable(
    facts: Any, tenant: tuple[str, str]
) -> None:
    _, key = tenant

    async def scenario() -> dict[str, dict[str, Any]]:
        answers: dict[str, dict[str, Any]] = {}
        async with connect(facts.websocket_url, additional_headers=_auth(key)) as ws:
            for name, text in (
                ("not_json", "this is not json"),
                ("unknown_action", json.dumps({"action": "dance", "id": "b2"})),
                ("missing_fields", json.dumps({"action": "invoke", "id": "b3"})),
                (
                    "too_large",
                    json.dumps(
                        {"action": "invoke", "id": "b4", "agent": "triage", "input": "x" * 40_000}
                    ),
                ),
            ):
                await ws.send(text)
                answers[name] = json.loads(await asyncio.wait_for(ws.recv(), 30))
            # Still open and usable: a good frame runs to its done frame.
            await ws.send(
                json.dumps({"action": "invoke", "id": "b5", "agent": "triage", "input": TEXT})
            )
            answers["good"] = (await _frames_until_final(ws, "b5"))[-1]
        return answers

    answers = _run(scenario())
    codes = {name: a.get("error", {}).get("code") for name, a in answers.items()}
    assert codes == {
        "not_json": "invalid_json",
        "unknown_action": "not_found",
        "missing_fields": "validation_error",
        "too_large": "payload_too_large",
        "good": None,
    }, answers
    for name in ("not_json", "unknown_action", "missing_fields", "too_large"):
        assert answers[name]["type"] == "error" and answers[name]["error"]["message"]
    assert answers["unknown_action"]["id"] == "b2"
    assert answers["missing_fields"]["error"]["details"]["fields"]
    assert answers["good"]["type"] == "done"


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {"Authorization": "Bearer sk-not-a-real-key"}),
        ("?ticket=made-up-ticket", {}),
        ("", {}),
    ],
    ids=["bad-key", "unknown-ticket", "no-credentials"],
)
def test_bad_credentials_are_refused_at_connect(
    facts: Any, query: str, headers: dict[str, str]
) -> None:
    async def scenario() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{facts.websocket_url}{query}", additional_headers=headers):
                pass
        return refused.value.response.status_code

    assert _run(scenario()) in (401, 403)


def _budget_item(facts: Any, tenant_id: str) -> dict[str, Any]:
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    item = _dynamodb(facts).get_item(
        TableName=facts.tables["budgets"],
        Key={"pk": {"S": f"TENANT#{tenant_id}#DAY#{day}"}},
        ConsistentRead=True,
    )
    return dict(item.get("Item") or {})


def test_a_client_that_leaves_mid_stream_leaves_budget_and_session_consistent(
    facts: Any, tenant: tuple[str, str], slow_stream: None
) -> None:
    tenant_id, key = tenant
    before = from_nano((_budget_item(facts, tenant_id).get("spent") or {"N": "0"})["N"])
    base = f"{facts.api_url}/v1/agents/support/sessions"
    created = http("POST", base, {"metadata": {"channel": "ws"}}, _auth(key))
    assert created.status == 201, created.body
    session_id = created.body["session_id"]
    frame = {
        "action": "message",
        "id": "e2e-leave-1",
        "agent": "support",
        "session_id": session_id,
        "message": "Hi, where is my order A-1001?",
    }

    async def leave_after_first_delta() -> dict[str, Any]:
        async with connect(facts.websocket_url, additional_headers=_auth(key)) as ws:
            await ws.send(json.dumps(frame))
            while True:
                first = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if first.get("id") == frame["id"]:
                    return dict(first)
        # leaving the block closes the connection mid-stream

    first = _run(leave_after_first_delta())
    assert first["type"] in ("delta", "tool"), first

    # Reconnect and resend the same client id: the finished result, never a second run.
    async def resend() -> dict[str, Any]:
        async with connect(facts.websocket_url, additional_headers=_auth(key)) as ws:
            await ws.send(json.dumps(frame))
            return (await _frames_until_final(ws, frame["id"]))[-1]

    def final() -> dict[str, Any] | None:
        answer = _run(resend())
        running = answer.get("error", {}).get("code") == "request_in_progress"
        return None if running else answer

    result = wait_for(final, timeout=60, every=0.5)
    history = http("GET", f"{base}/{session_id}", None, _auth(key))
    assert history.status == 200, history.body
    roles = [m["role"] for m in history.body["messages"]]
    if result["type"] == "done":
        assert roles == ["user", "assistant"], roles  # committed once
        assert result["turn"] == 1
    else:
        assert roles == [], roles  # or not at all

    # The budget is settled: nothing left reserved, the spend is the real usage.
    item = wait_for(
        lambda: (
            (i := _budget_item(facts, tenant_id)) and i.get("spent") == i.get("committed") and i
        ),
        timeout=30,
    )
    spent = from_nano(item["spent"]["N"])
    assert spent > before
    if result["type"] == "done":  # the turn's every model call (memory extraction too)
        assert spent - before == Decimal(str(result["cost_usd"]))
    # The tenant sees the same spend through GET /v1/usage.
    usage = http("GET", f"{facts.api_url}/v1/usage?period=day", None, _auth(key))
    assert usage.status == 200, usage.body
    assert Decimal(str(usage.body["cost_usd"])) == spent

"""The demo's streaming step (issue 17): a session turn streamed over the WebSocket API.

A support session created over REST, a single-use ticket (``POST /v1/stream-tickets``),
then the turn sent as a ``message`` frame: the deltas arrive as the model streams, then
``done`` with the same fields (reply, turn, usage, cost) as the REST answer.
"""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

from infra.local.facts import LocalFacts
from infra.local.stream_client import new_session, stream, ticket


def session_turn(facts: LocalFacts) -> str:
    """The streamed turn, on a session of its own that is deleted afterwards (the demo's
    REST session step decides what a running cloud keeps for ``stratus eval capture``)."""
    key = facts.demo_tenant_key
    session_id = new_session(facts.api_url, key, "support")
    try:
        return _streamed_turn(facts, key, session_id)
    finally:
        request = urllib.request.Request(  # noqa: S310 - the local cloud's own API
            f"{facts.api_url}/v1/agents/support/sessions/{session_id}",
            method="DELETE",
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass


def _streamed_turn(facts: LocalFacts, key: str, session_id: str) -> str:
    frame = {
        "action": "message",
        "id": f"demo-{uuid.uuid4().hex[:12]}",
        "agent": "support",
        "session_id": session_id,
        "message": "Hi, where is my order A-1001?",
    }
    frames = asyncio.run(stream(facts.websocket_url, frame, ticket=ticket(facts.api_url, key)))
    *before, done = frames
    assert done["type"] == "done", done
    deltas = [f for f in before if f["type"] == "delta"]
    assert len(deltas) >= 2, frames
    tools = sorted({f["name"] for f in before if f["type"] == "tool"})
    return (
        f"{len(deltas)} deltas, tools {tools or '-'}, then done: turn {done['turn']}, "
        f"${done['cost_usd']} ({facts.websocket_url})"
    )

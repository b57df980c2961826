"""The gateway's streamed calls (issue 17) on moto with the real openai client over HTTP:
replays stream one delta, a stream that breaks after text settles the budget to the
runtime's estimate (once, not retried), a stream without a usage chunk is estimated."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from infra.local.fake_model import FakeModelServer
from stratus.agents import CallScope, ToolContext
from stratus.errors import ModelUnavailable
from stratus.llm_stream import StreamBroken, estimate_usage
from stratus.tokens import text_tokens
from tests.functional.gateway_support import Rig, make_rig, today

TEXT = "Where is my order A-1001?"
TENANT_DAY = f"TENANT#tenant-a#DAY#{today()}"


def run_streamed(rig: Rig, agent: str, scope_id: str) -> tuple[Any, list[dict[str, Any]]]:
    runner = rig.runner(agent)
    scope = CallScope(
        tenant_id="tenant-a", agent=agent, kind="job", scope_id=scope_id, replayable=True
    )
    ctx = ToolContext(
        tenant_id="tenant-a",
        agent=agent,
        request_id=scope_id,
        settings=rig.settings,
        scope=scope,
        clients=rig.runtime.clients,
    )
    events: list[dict[str, Any]] = []
    return runner.run(TEXT, ctx=ctx, on_event=events.append), events


def test_a_ledger_replay_streams_each_calls_text_as_one_delta(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    first, events = run_streamed(rig, "triage", "job-s1")
    deltas = [e["text"] for e in events if e["type"] == "delta"]
    assert len(deltas) >= 2 and json.loads("".join(deltas)) == first.output
    calls = fake_model.call_count()
    again, replayed = run_streamed(rig, "triage", "job-s1")
    assert fake_model.call_count() == calls and again.ledger_hits == 1
    assert "".join(e["text"] for e in replayed if e["type"] == "delta") == "".join(deltas)
    assert again.usage == first.usage and again.cost_usd == first.cost_usd


def test_the_gateway_replays_a_streamed_call_as_one_delta(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    scope = CallScope(
        tenant_id="tenant-a", agent="support", kind="job", scope_id="job-s2", replayable=True
    )
    sent: list[list[str]] = [[], []]
    for deltas in sent:
        rig.gateway.chat(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": TEXT}],
            max_output_tokens=256,
            scope=scope,
            agent="support",
            on_delta=deltas.append,
        )
    assert fake_model.call_count() == 1
    assert len(sent[0]) >= 2 and sent[1] == ["".join(sent[0])]


class _Broken(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose streams misbehave (``mode`` on the server)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: Any = self.server
        server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            event = {
                "id": "chatcmpl-broken",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-5-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            data = f"data: {json.dumps(event)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        if server.mode == "before_text":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        chunk({"role": "assistant", "content": ""})
        chunk({"content": "Your order "})
        chunk({"content": "is on its way"})
        if server.mode == "after_text":  # the connection drops mid-answer
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        chunk({}, "stop")  # no usage chunk, then the end
        done = b"data: [DONE]\n\n"
        self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")


@pytest.fixture
def broken() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    server.requests, server.mode = 0, "after_text"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def chat(rig: Rig, deltas: list[str]) -> Any:
    return rig.gateway.chat(
        model="gpt-5-mini",
        messages=[{"role": "user", "content": TEXT}],
        max_output_tokens=256,
        scope=CallScope(tenant_id="tenant-a", agent="support", kind="request", scope_id="r-b"),
        agent="support",
        on_delta=deltas.append,
    )


def test_a_stream_broken_after_text_settles_the_budget_to_the_estimate_once(
    cloud: dict[str, Any], broken: Any
) -> None:
    rig = make_rig(cloud, openai_base_url=f"http://127.0.0.1:{broken.server_port}/v1")
    deltas: list[str] = []
    with pytest.raises(StreamBroken) as raised:
        chat(rig, deltas)
    assert raised.value.code == "model_unavailable"
    assert deltas == ["Your order ", "is on its way"]
    assert broken.requests == 1  # not retried: the text cannot be unsent
    expected = estimate_usage(
        {"messages": [{"role": "user", "content": TEXT}]}, "Your order is on its way"
    )
    assert raised.value.usage == expected
    assert expected.output_tokens == text_tokens("Your order is on its way") > 0
    cost = rig.gateway._prices.cost("gpt-5-mini", expected)
    assert rig.spent(TENANT_DAY) == cost > 0  # settled to the estimate, never to zero
    assert rig.committed(TENANT_DAY) == cost  # and nothing left reserved


def test_a_stream_broken_before_any_text_is_retried_and_released(
    cloud: dict[str, Any], broken: Any
) -> None:
    broken.mode = "before_text"
    rig = make_rig(
        cloud,
        openai_base_url=f"http://127.0.0.1:{broken.server_port}/v1",
        model_max_attempts=2,
        model_backoff_base_s=0,
    )
    deltas: list[str] = []
    with pytest.raises(ModelUnavailable):
        chat(rig, deltas)
    assert deltas == [] and broken.requests == 2
    assert rig.committed(TENANT_DAY) == 0 and rig.spent(TENANT_DAY) == 0


def test_a_stream_without_a_usage_chunk_is_billed_at_the_estimate(
    cloud: dict[str, Any], broken: Any
) -> None:
    broken.mode = "no_usage"
    rig = make_rig(cloud, openai_base_url=f"http://127.0.0.1:{broken.server_port}/v1")
    deltas: list[str] = []
    result = chat(rig, deltas)
    assert result.message.content == "Your order is on its way"
    expected = estimate_usage(
        {"messages": [{"role": "user", "content": TEXT}]}, "Your order is on its way"
    )
    assert result.usage == expected and expected.input_tokens > 0
    assert rig.spent(TENANT_DAY) == rig.gateway._prices.cost("gpt-5-mini", expected) > 0

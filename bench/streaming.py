"""Streamed (WebSocket) against non-streamed (REST): time to first token and to the last frame.

One local cloud (``infra.local.cloud``: the real authorizers, router, agent function and
the offline fake model), the fake model streaming at a fixed token rate
(``stream_delay_ms`` between two chunks, ``STRATUS_FAKE_MODEL_STREAM_DELAY_MS``). The
same ``triage`` request, alternately over ``POST /v1/agents/triage/invoke`` and as an
``invoke`` frame on one open WebSocket connection. REST's first token arrives with its
whole answer, so its time to first token is its latency; the WebSocket's is the first
``delta`` frame, its last frame the ``done``. The figures that carry over to AWS are the
ratios of the same run (loopback, both cores shared with the cloud: absolute times are
this machine's).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from bench.stats import summarize
from infra.local.demo import http

HEADING = "## Streaming: time to first token and to the last frame, WebSocket against REST"
DELAY_MS = 40.0
TEXT = "Where is my order A-1001? It was due last week."


async def _streamed(url: str, key: str, count: int, prefix: str) -> list[dict[str, float]]:
    from websockets.asyncio.client import connect

    rows = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        for index in range(count):
            client_id = f"{prefix}-{index}"
            frame = {"action": "invoke", "id": client_id, "agent": "triage", "input": TEXT}
            started = time.perf_counter()
            await ws.send(json.dumps(frame))
            first = None
            deltas = 0
            while True:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if answer.get("id") != client_id:
                    continue
                if answer["type"] == "delta":
                    deltas += 1
                    if first is None:
                        first = time.perf_counter() - started
                if answer["type"] in ("done", "error"):
                    if answer["type"] == "error":
                        raise RuntimeError(f"streamed request failed: {answer}")
                    last = time.perf_counter() - started
                    break
            rows.append(
                {"first_ms": (first or last) * 1000, "last_ms": last * 1000, "deltas": deltas}
            )
    return rows


def _rest(api_url: str, key: str) -> dict[str, float]:
    started = time.perf_counter()
    reply = http(
        "POST",
        f"{api_url}/v1/agents/triage/invoke",
        {"input": TEXT},
        {"Authorization": f"Bearer {key}"},
    )
    elapsed = (time.perf_counter() - started) * 1000
    if reply.status != 200:
        raise RuntimeError(f"REST request failed: {reply.status} {reply.body}")
    return {"first_ms": elapsed, "last_ms": elapsed}


def measure(
    requests: int = 10, delay_ms: float = DELAY_MS, log: Callable[[str], None] = print
) -> dict[str, Any]:
    import os

    from infra.local.cloud import LocalCloud

    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with LocalCloud(
        api_port=0, aws_port=0, state_file=None, environ=environ, log_sink=lambda line: None
    ) as cloud:
        facts = cloud.facts
        assert facts is not None and cloud.fake_model is not None
        cloud.fake_model.stream_delay_ms = delay_ms
        key = facts.demo_tenant_key
        # Warm both paths (cold starts of the functions are not what is compared).
        for _ in range(3):
            _rest(facts.api_url, key)
        asyncio.run(_streamed(facts.websocket_url, key, 3, "warm"))
        rest: list[dict[str, float]] = []
        streamed: list[dict[str, float]] = []
        for index in range(requests):  # interleaved: both see the same machine
            rest.append(_rest(facts.api_url, key))
            streamed.extend(asyncio.run(_streamed(facts.websocket_url, key, 1, f"b{index}")))
        connects = []
        for _ in range(max(3, requests // 2)):
            started = time.perf_counter()
            asyncio.run(_connect_only(facts.websocket_url, key))
            connects.append((time.perf_counter() - started) * 1000)
        log(f"  streaming: {requests} requests each way at {delay_ms:g} ms per chunk")
    result: dict[str, Any] = {
        "requests": requests,
        "stream_delay_ms": delay_ms,
        "deltas_per_reply": min(int(row["deltas"]) for row in streamed),
        "rest": {
            "first_ms": summarize([r["first_ms"] for r in rest]),
            "last_ms": summarize([r["last_ms"] for r in rest]),
        },
        "websocket": {
            "first_ms": summarize([r["first_ms"] for r in streamed]),
            "last_ms": summarize([r["last_ms"] for r in streamed]),
        },
        "connect_ms": summarize(connects),
    }
    rest_first = result["rest"]["first_ms"]["median"]
    result["ratios"] = {
        "first_token": round(result["websocket"]["first_ms"]["median"] / rest_first, 3),
        "last_frame": round(result["websocket"]["last_ms"]["median"] / rest_first, 3),
    }
    return result


async def _connect_only(url: str, key: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}):
        pass


def render(data: dict[str, Any]) -> list[str]:
    ratios = data["ratios"]
    lines = [
        HEADING,
        "",
        f"The same `triage` request {data['requests']} times each way on one local cloud, "
        f"the offline fake model generating one chunk every {data['stream_delay_ms']:g} ms "
        f"({data['deltas_per_reply']}+ deltas a reply; a whole answer takes as long as its "
        "stream). REST answers everything at once, so its first token is its whole latency; "
        "over the WebSocket the first `delta` frame arrives after the first chunk, the `done` "
        "frame after the last. Medians in ms; the ratios (WebSocket / REST, same run) are "
        "the figures that carry over.",
        "",
        "| path | first token median | first token p90 | last frame median | last frame p90 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("rest", "REST (non-streamed)"), ("websocket", "WebSocket (streamed)")):
        row = data[name]
        lines.append(
            f"| {label} | {row['first_ms']['median']:,.1f} | {row['first_ms']['p90']:,.1f} "
            f"| {row['last_ms']['median']:,.1f} | {row['last_ms']['p90']:,.1f} |"
        )
    lines += [
        "",
        f"Time to first token, streamed / non-streamed: **{ratios['first_token']:.2f}x**; "
        f"time to the last frame, streamed / non-streamed: **{ratios['last_frame']:.2f}x**. "
        f"Opening a connection (authorizer + `$connect`) took {data['connect_ms']['median']:,.1f} "
        "ms (median), once per connection, not per request.",
        "",
    ]
    return lines

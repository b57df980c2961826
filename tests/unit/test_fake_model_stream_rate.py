"""The fake model's fixed token rate (``STRATUS_FAKE_MODEL_STREAM_DELAY_MS``): streamed
chunks are spaced by it, a whole answer takes as long as its stream, 0 (default) is off.
Lower bounds only: a wait lasts at least its delay, whatever the machine's load."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from infra.local.fake_model import FakeModelServer
from infra.local.fake_model.server import STREAM_DELAY_ENV

MESSAGES: list[Any] = [{"role": "user", "content": "Where is my order A-1001?"}]


def test_the_rate_is_read_at_start_and_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STREAM_DELAY_ENV, raising=False)
    assert FakeModelServer().stream_delay_ms == 0
    monkeypatch.setenv(STREAM_DELAY_ENV, "25")
    assert FakeModelServer().stream_delay_ms == 25
    assert FakeModelServer(stream_delay_ms=5).stream_delay_ms == 5


def test_streamed_chunks_and_whole_answers_follow_the_rate() -> None:
    delay_ms = 60
    with FakeModelServer(stream_delay_ms=delay_ms) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.url, max_retries=0)
        started = time.perf_counter()
        arrivals = []
        stream = client.chat.completions.create(
            model="gpt-5-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        for _chunk in stream:
            arrivals.append(time.perf_counter())
        streamed_s = arrivals[-1] - started
        # Every chunk after the first waited its turn (the usage chunk included).
        assert len(arrivals) >= 4
        assert streamed_s >= (len(arrivals) - 1) * delay_ms / 1000

        started = time.perf_counter()
        whole = client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)
        assert whole.choices[0].message.content
        # The whole answer is held as long as its stream (minus its usage chunk) would take.
        assert time.perf_counter() - started >= (len(arrivals) - 2) * delay_ms / 1000

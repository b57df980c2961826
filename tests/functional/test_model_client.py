"""The model client against the fake server: retries, backoff, Retry-After."""

from __future__ import annotations

import pytest

from infra.local.fake_model import FakeModelServer, Fault
from stratus.config import Settings
from stratus.errors import ModelProviderError, ModelRateLimited
from stratus.llm import ModelClient

MESSAGES = [{"role": "user", "content": "hello"}]


def client(server: FakeModelServer, sleeps: list[float], **settings: object) -> ModelClient:
    config = Settings(
        openai_api_key="sk-unit",
        openai_base_url=server.url,  # type: ignore[arg-type]
        model_backoff_base_s=0.5,
        model_backoff_cap_s=1.5,
        **settings,
    )
    return ModelClient(config, sleep=sleeps.append, jitter=lambda: 1.0)


def test_backoff_is_exponential_and_capped(fake_model: FakeModelServer) -> None:
    sleeps: list[float] = []
    fake_model.inject(Fault(status=502, times=-1))
    with pytest.raises(ModelProviderError):
        client(fake_model, sleeps, model_max_attempts=4).chat(
            model="gpt-5-mini", messages=MESSAGES, max_output_tokens=64
        )
    assert sleeps == [0.5, 1.0, 1.5]  # jitter pinned at its maximum
    assert fake_model.call_count() == 4


def test_retry_after_wins_over_backoff(fake_model: FakeModelServer) -> None:
    sleeps: list[float] = []
    fake_model.inject(Fault(status=429, retry_after=3, times=1))
    result = client(fake_model, sleeps).chat(
        model="gpt-5-mini", messages=MESSAGES, max_output_tokens=64
    )
    assert sleeps == [3.0]
    assert result.attempts == 2
    assert result.usage.input_tokens > 0
    assert result.fake_model is True


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(fake_model: FakeModelServer) -> None:
    class FiveSecondsLeft:
        def remaining_s(self) -> float:
            return 5.0

    sleeps: list[float] = []
    fake_model.inject(Fault(status=429, retry_after=10, times=-1))
    with pytest.raises(ModelRateLimited) as raised:
        client(fake_model, sleeps).chat(
            model="gpt-5-mini", messages=MESSAGES, max_output_tokens=64, deadline=FiveSecondsLeft()
        )
    assert sleeps == []
    assert raised.value.headers == {"Retry-After": "10"}
    assert fake_model.call_count() == 1

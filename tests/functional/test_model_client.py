"""The model client against the fake server: one attempt, errors classified, deadlines.

Retrying is the gateway's (``tests/functional/test_gateway_resilience.py``); the
client makes exactly one request per call and says whether it may be retried.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from infra.local.fake_model import FakeModelServer, Fault
from stratus.config import Settings
from stratus.errors import (
    DeadlineExceeded,
    ModelAuthFailed,
    ModelProviderError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelUnavailable,
)
from stratus.gateway_stores.memory import MemorySecrets
from stratus.keys import KeyProvider
from stratus.llm import ModelClient, RetryHint, retry_hint

MESSAGES = [{"role": "user", "content": "hello"}]


class Left:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining_s(self) -> float:
        return self.end - time.monotonic()


def client(server: FakeModelServer, **settings: Any) -> ModelClient:
    config = Settings(
        openai_api_key="sk-unit",
        openai_base_url=server.url,  # type: ignore[arg-type]
        **settings,
    )
    return ModelClient(config, KeyProvider(config, MemorySecrets()))


def complete(model_client: ModelClient, **kwargs: Any) -> Any:
    return model_client.complete(
        model="gpt-5-mini", messages=MESSAGES, max_output_tokens=64, **kwargs
    )


def test_a_server_error_is_one_attempt_marked_retryable(fake_model: FakeModelServer) -> None:
    fake_model.inject(Fault(status=502, times=-1))
    with pytest.raises(ModelProviderError) as raised:
        complete(client(fake_model))
    assert raised.value.status == 502
    assert retry_hint(raised.value) == RetryHint(retryable=True, after_s=None)
    assert fake_model.call_count() == 1  # no retry inside the client


def test_a_429_carries_the_providers_retry_after(fake_model: FakeModelServer) -> None:
    fake_model.inject(Fault(status=429, retry_after=3, times=1))
    with pytest.raises(ModelRateLimited) as raised:
        complete(client(fake_model))
    assert raised.value.headers == {"Retry-After": "3"}
    assert retry_hint(raised.value) == RetryHint(retryable=True, after_s=3.0)
    assert fake_model.call_count() == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, ModelAuthFailed), (400, ModelRequestRejected), (404, ModelRequestRejected)],
)
def test_key_and_request_errors_are_not_retryable(
    fake_model: FakeModelServer, status: int, error: type[Exception]
) -> None:
    fake_model.inject(Fault(status=status, times=1))
    with pytest.raises(error) as raised:
        complete(client(fake_model))
    assert retry_hint(raised.value) == RetryHint(retryable=False)


def test_the_timeout_is_cut_to_the_deadline(fake_model: FakeModelServer) -> None:
    # 3.5 s left minus the 1.5 s margin: the request may take 2 s, not the 20 s default.
    fake_model.inject(Fault(status=200, delay_s=6.0, times=1))
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as raised:
        complete(client(fake_model, deadline_margin_s=1.5), deadline=Left(3.5))
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 3.5
    assert raised.value.message == "the model provider timed out"
    assert retry_hint(raised.value).retryable


def test_too_little_time_left_sends_no_request(fake_model: FakeModelServer) -> None:
    with pytest.raises(DeadlineExceeded):
        complete(client(fake_model, deadline_margin_s=1.5), deadline=Left(2.0))
    assert fake_model.call_count() == 0


def test_results_and_usage_are_parsed(fake_model: FakeModelServer) -> None:
    result = complete(client(fake_model))
    assert result.model == "gpt-5-mini" and result.response_model
    assert result.attempts == 1
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.finish_reason == "stop"
    assert isinstance(result.message.content, str) and result.message.content
    assert result.latency_ms > 0


def test_the_fake_model_is_named_once_in_the_logs(
    fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stratus import llm

    warnings: list[str] = []
    monkeypatch.setattr(llm.logger, "warning", lambda msg, *a, **k: warnings.append(msg))
    model_client = client(fake_model)
    first = complete(model_client)
    complete(model_client)
    assert first.fake_model is True
    assert warnings == ["model replies come from the offline fake model server, not a real model"]

"""Circuit breaker transitions on the in-memory store with a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from stratus.breaker import PROBE_S, CircuitBreaker
from stratus.budgets import BudgetLedger
from stratus.config import Settings
from stratus.errors import ModelRateLimited, ModelRequestRejected, StratusError
from stratus.gateway import ModelGateway
from stratus.gateway_stores.memory import MemoryBreakerStore, MemoryBucketStore, NoAlerts
from stratus.ledger import CompletionStore
from stratus.llm import RetryHint
from stratus.prices import load_price_table
from stratus.ratelimit import KeyBuckets
from stratus.rollups import UsageRollups

E, M = "api.example", "gpt-5-mini"


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, *, failures: int = 3, open_s: float = 30.0) -> CircuitBreaker:
    settings = Settings(breaker_failures=failures, breaker_open_s=open_s)
    return CircuitBreaker(settings, MemoryBreakerStore(), clock=clock)


def fail(cb: CircuitBreaker) -> bool:
    return cb.failure(E, M, cb.before(E, M))


def open_breaker(cb: CircuitBreaker, threshold: int = 3) -> None:
    for _ in range(threshold):
        fail(cb)
    assert not cb.before(E, M).allowed


def test_closed_counts_failures_and_opens_at_the_threshold() -> None:
    clock = Clock()
    cb = breaker(clock)
    assert cb.before(E, M).allowed and cb.before(E, M).state == "closed"
    assert fail(cb) is False
    assert fail(cb) is False
    assert cb.before(E, M).failures == 2 and cb.before(E, M).allowed
    assert fail(cb) is True  # the 3rd failure in a row opens it
    assert cb.state(E, M)["opened_until"] == clock.now + 30.0


def test_open_skips_until_open_s_has_passed() -> None:
    clock = Clock()
    cb = breaker(clock)
    open_breaker(cb)
    clock.now += 29.9
    admission = cb.before(E, M)
    assert not admission.allowed and admission.state == "open" and not admission.probe


def test_after_open_s_exactly_one_caller_wins_the_probe() -> None:
    clock = Clock()
    cb = breaker(clock)
    open_breaker(cb)
    clock.now += 30.0
    admissions = [cb.before(E, M) for _ in range(5)]
    assert [a.allowed for a in admissions] == [True, False, False, False, False]
    assert admissions[0].probe and admissions[0].state == "half_open"
    assert all(a.state == "half_open" and not a.probe for a in admissions[1:])


def test_a_probe_that_never_reports_back_lets_another_caller_probe() -> None:
    clock = Clock()
    cb = breaker(clock)
    open_breaker(cb)
    clock.now += 30.0
    assert cb.before(E, M).probe
    clock.now += PROBE_S + 0.1
    assert cb.before(E, M).probe


def test_a_successful_probe_closes_the_breaker() -> None:
    clock = Clock()
    cb = breaker(clock)
    open_breaker(cb)
    clock.now += 30.0
    probe = cb.before(E, M)
    cb.success(E, M, probe)
    assert cb.state(E, M) == {"failures": 0}
    after = cb.before(E, M)
    assert after.allowed and after.state == "closed" and after.failures == 0


def test_a_failed_probe_opens_it_again_for_open_s() -> None:
    clock = Clock()
    cb = breaker(clock)
    open_breaker(cb)
    clock.now += 30.0
    probe = cb.before(E, M)
    assert cb.failure(E, M, probe) is True
    assert cb.state(E, M)["opened_until"] == clock.now + 30.0
    assert "probe_until" not in cb.state(E, M)
    assert not cb.before(E, M).allowed
    clock.now += 30.0
    assert cb.before(E, M).probe  # the next period has its own probe


def test_a_success_after_failures_resets_the_count() -> None:
    clock = Clock()
    cb = breaker(clock)
    fail(cb)
    fail(cb)
    cb.success(E, M, cb.before(E, M))
    assert cb.before(E, M).failures == 0
    fail(cb)
    fail(cb)
    assert cb.before(E, M).allowed  # two in a row again: still under the threshold


# -- which failures count: decided by the gateway, which reports them to the breaker


class _Keys:
    def __init__(self, *keys: str) -> None:
        self._keys = list(keys)

    def keys(self) -> list[str]:
        return self._keys


class _FailingClient:
    endpoint = E

    def __init__(self, make_error: Callable[[], StratusError], *keys: str) -> None:
        self.keys = _Keys(*keys)
        self._make_error = make_error

    def complete(self, **request: Any) -> Any:
        error = self._make_error()
        error.retry_hint = RetryHint(retryable=isinstance(error, ModelRateLimited))  # type: ignore[attr-defined]
        raise error


def _gateway(client: _FailingClient, cb: CircuitBreaker, clock: Clock) -> ModelGateway:
    settings = Settings(model_max_attempts=3, tier_fast_fallbacks="")
    return ModelGateway(
        client,  # type: ignore[arg-type]
        settings,
        load_price_table(),
        budgets=BudgetLedger(settings, None, alerts=NoAlerts(), clock=clock),
        ledger=CompletionStore(settings, None, clock=clock),
        buckets=KeyBuckets(settings, MemoryBucketStore(), clock=clock),
        breaker=cb,
        rollups=UsageRollups(settings, None, clock=clock),
        sleep=lambda s: None,
        jitter=lambda: 0.0,
    )


def _call(gateway: ModelGateway) -> None:
    gateway.chat(model=M, messages=[{"role": "user", "content": "hi"}], max_output_tokens=16)


@pytest.mark.parametrize(
    ("make_error", "keys"),
    [
        (lambda: ModelRequestRejected("rejected (HTTP 400)"), ("sk-1",)),
        (lambda: ModelRateLimited("429"), ("sk-1",)),
        (lambda: ModelRateLimited("429"), ("sk-1", "sk-2")),
        (lambda: ModelRateLimited("429"), ("sk-1", "sk-2", "sk-3")),
    ],
    ids=["4xx", "429-one-key", "429-two-keys", "429-as-many-keys-as-attempts"],
)
def test_4xx_and_key_429s_do_not_count_as_breaker_failures(
    make_error: Callable[[], StratusError], keys: tuple[str, ...]
) -> None:
    clock = Clock()
    cb = breaker(clock, failures=1)
    gateway = _gateway(_FailingClient(make_error, *keys), cb, clock)
    with pytest.raises((ModelRequestRejected, ModelRateLimited)):
        _call(gateway)
    assert cb.state(E, M).get("failures", 0) == 0
    assert cb.before(E, M).allowed


def test_a_provider_5xx_counts_and_opens_the_breaker() -> None:
    from stratus.errors import ModelProviderError

    clock = Clock()
    cb = breaker(clock, failures=1)
    gateway = _gateway(_FailingClient(lambda: ModelProviderError("HTTP 500"), "sk-1"), cb, clock)
    with pytest.raises(ModelProviderError):
        _call(gateway)
    assert not cb.before(E, M).allowed

"""Circuit breaker transitions on the in-memory store with a fake clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from stratus.breaker import PROBE_S, CircuitBreaker, wait_for_refreshes
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


# -- the per-process copy of the breaker item (issue 11)


class _CountingStore(MemoryBreakerStore):
    """Counts reads; a read can be held (``gate``) or made to fail (``fail_reads``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_reads = 0

    def read(self, key: str) -> dict[str, Any]:
        self.reads += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail_reads:
            self.fail_reads -= 1
            raise RuntimeError("the limits table is unreachable")
        return super().read(key)


def _cached(clock: Clock, store: _CountingStore, **kw: Any) -> CircuitBreaker:
    settings = Settings(breaker_failures=2, breaker_open_s=30.0, gateway_state_cache_s=2.0)
    return CircuitBreaker(settings, store, clock=clock, **kw)


def test_a_fresh_copy_costs_no_read() -> None:
    clock, store = Clock(), _CountingStore()
    cb = _cached(clock, store)
    for _ in range(5):
        assert cb.before(E, M).allowed
        clock.now += 0.3
    assert store.reads == 1


def test_a_stale_copy_is_served_while_one_background_refresh_reads_it() -> None:
    clock, store = Clock(), _CountingStore()
    cb = _cached(clock, store)
    cb.before(E, M)  # the copy: closed
    store.open_until(cb._pk(E, M), clock.now + 30)  # another process opens it
    clock.now += 2.5
    store.gate, store.entered = threading.Event(), threading.Event()
    assert cb.before(E, M).allowed  # stale copy served: no wait on the read
    assert store.entered.wait(10)  # ...while a daemon thread reads
    assert cb.before(E, M).allowed and cb.before(E, M).allowed
    assert store.reads == 2  # single-flight: one refresh however many callers
    store.gate.set()
    wait_for_refreshes()
    assert not cb.before(E, M).allowed  # the refreshed copy: open
    assert store.reads == 2


def test_a_refresh_that_dies_keeps_the_stale_copy_and_the_next_stale_read_retries() -> None:
    clock, store = Clock(), _CountingStore()
    cb = _cached(clock, store, spawn=lambda fn: fn())
    cb.before(E, M)
    store.open_until(cb._pk(E, M), clock.now + 30)
    clock.now += 2.5
    store.fail_reads = 1
    assert cb.before(E, M).allowed  # the refresh failed halfway: the stale copy stays
    assert store.reads == 2
    assert not cb.before(E, M).allowed  # not stuck "refreshing": the next one reads
    assert store.reads == 3


def test_a_refresh_started_before_an_own_write_does_not_undo_it() -> None:
    clock, store = Clock(), _CountingStore()
    cb = _cached(clock, store)
    cb.before(E, M)
    clock.now += 2.5
    store.gate, store.entered = threading.Event(), threading.Event()
    assert cb.before(E, M).allowed  # a refresh starts, reading "closed"
    assert store.entered.wait(10)
    fail(cb)
    assert fail(cb) is True  # this process opens it meanwhile (store.read is not used)
    store.gate.set()
    wait_for_refreshes()
    assert not cb.before(E, M).allowed  # the older read did not overwrite the open copy


def test_with_the_cache_off_every_check_reads_the_item() -> None:
    clock, store = Clock(), _CountingStore()
    settings = Settings(gateway_state_cache_s=0)
    cb = CircuitBreaker(settings, store, clock=clock)
    assert cb.warm(E, [M]) == []
    for _ in range(3):
        cb.before(E, M)
    assert store.reads == 3


def test_the_pre_call_wave_reads_only_missing_copies() -> None:
    clock, store = Clock(), _CountingStore()
    cb = _cached(clock, store)
    reads = cb.warm(E, [M, "gpt-4.1-mini", M])
    assert len(reads) == 2
    for read in reads:
        read()
    assert cb.warm(E, [M, "gpt-4.1-mini"]) == []
    cb.before(E, M)
    cb.before(E, "gpt-4.1-mini")
    assert store.reads == 2


def test_the_state_cache_setting_is_validated() -> None:
    from pydantic import ValidationError

    assert Settings().gateway_state_cache_s == 2.0
    with pytest.raises(ValidationError, match="gateway_state_cache_s"):
        Settings(gateway_state_cache_s=-1)


# -- key buckets from the per-process copy (issue 11)


class _CountingBuckets(MemoryBucketStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.takes: list[int] = []

    def read(self, key_ids: Any, window: int) -> Any:
        self.reads += 1
        return super().read(key_ids, window)

    def take(self, key_id: str, window: int, tokens: int, **kw: Any) -> bool:
        self.takes.append(tokens)
        return super().take(key_id, window, tokens, **kw)


def _buckets(clock: Clock, store: _CountingBuckets, **overrides: Any) -> KeyBuckets:
    settings = Settings(gateway_state_cache_s=2.0, **overrides)
    return KeyBuckets(settings, store, clock=clock, spawn=lambda fn: fn())


def test_keys_are_ranked_from_the_copy_and_this_processes_takes() -> None:
    from stratus.ratelimit import key_id

    clock, store = Clock(), _CountingBuckets()
    buckets = _buckets(clock, store)
    used = [buckets.acquire(["sk-1", "sk-2"], 100).key_id for _ in range(6)]
    assert used.count(key_id("sk-1")) == used.count(key_id("sk-2")) == 3
    assert store.reads == 1  # the first call's copy; the rest came from it


def test_unused_tokens_ride_on_the_next_take_and_the_bucket_stays_exact() -> None:
    clock, store = Clock(), _CountingBuckets()
    buckets = _buckets(clock, store)
    lease = buckets.acquire(["sk-1"], 1000)
    buckets.settle(lease, 100)  # 900 unused: no write now
    second = buckets.acquire(["sk-1"], 1000)
    assert store.takes == [1000, 100]  # the 900 came back with the next take
    loads, _ = store.read([lease.key_id], lease.window)
    assert loads[lease.key_id].tokens == 1100 and second.tokens == 1000


def test_a_busy_bucket_gets_its_unused_tokens_back_at_once() -> None:
    clock, store = Clock(), _CountingBuckets()
    buckets = _buckets(clock, store, key_tpm=1500)
    lease = buckets.acquire(["sk-1"], 1000)  # two thirds of the minute's tokens
    buckets.settle(lease, 100)
    loads, _ = store.read([lease.key_id], lease.window)
    assert loads[lease.key_id].tokens == 100


def test_a_refused_take_tries_the_next_key() -> None:
    clock, store = Clock(), _CountingBuckets()
    here = _buckets(clock, store, key_rpm=2)
    there = _buckets(clock, store, key_rpm=2)  # another process on the same buckets
    keys = ["sk-1", "sk-2"]
    mine = here.acquire(keys, 10)  # its copy (both empty) is read once, here
    other = next(k for k in keys if k != mine.api_key)
    there.acquire([other], 10)
    there.acquire([other], 10)  # the other process fills the other key
    # This process's copy still shows the other key empty: it is ranked first, refused.
    from stratus.ratelimit import key_id

    lease, refused = here.take_first(keys, 10)
    assert lease is None and refused == key_id(other)
    retry = here.acquire(keys, 10, skip={refused})
    assert retry.key_id == mine.key_id  # the refusal path: the next key
    with pytest.raises(ModelRateLimited) as caught:
        here.acquire(keys, 10)  # both full now
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 60

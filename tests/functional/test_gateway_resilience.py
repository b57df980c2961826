"""The gateway against a failing provider: retries, keys, fallbacks, breaker, timeouts."""

from __future__ import annotations

import time
from typing import Any

import pytest

from infra.local.fake_model import FakeModelServer, Fault
from stratus.errors import DeadlineExceeded, ModelRateLimited, ModelUnavailable
from tests.functional.gateway_support import make_rig, set_keys

TEXT = "I was billed twice"


def test_429_with_retry_after_is_honoured(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    fake_model.inject(Fault(status=429, retry_after=2, times=1))
    result = rig.run("triage", TEXT)
    assert result.model == "gpt-5-mini" and not result.fallback_from
    assert fake_model.call_count() == 2
    assert rig.sleeps == [2.0]  # exactly what the provider asked for, no jitter


def test_500s_are_retried_with_full_jitter_backoff(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, model_backoff_base_s=0.5)
    fake_model.inject(Fault(status=500, times=2))
    result = rig.run("triage", TEXT)
    assert result.model == "gpt-5-mini"
    assert fake_model.call_count() == 3
    assert [r.status for r in fake_model.requests] == [500, 500, 200]
    assert rig.sleeps == [0.0, 0.0]  # jitter() = 0 here: uniform(0, base * 2**n)


def test_a_slow_response_past_the_timeout_is_cut_and_retried(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, model_timeout_s=0.3)
    fake_model.inject(Fault(status=200, delay_s=1.0, times=1))
    result = rig.run("triage", TEXT)
    assert result.model == "gpt-5-mini"
    assert fake_model.call_count() == 2
    # The server holds the first request for its whole 1 s delay and only then sees
    # that the client left: wait for it to be settled, then it must be a 499.
    settle_by = time.monotonic() + 5.0
    while fake_model.requests[0].status is None and time.monotonic() < settle_by:
        time.sleep(0.02)
    assert fake_model.requests[0].status == 499  # the client gave up on it


def test_backoff_is_exponential_and_capped(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(
        cloud,
        jitter=lambda: 1.0,  # jitter pinned at its maximum
        model_backoff_base_s=0.5,
        model_backoff_cap_s=1.5,
        model_max_attempts=4,
    )
    fake_model.inject(Fault(status=502, model="gpt-5-mini", times=-1))
    result = rig.run("triage", TEXT)
    assert result.model == "gpt-4.1-mini"
    assert fake_model.call_count(model="gpt-5-mini") == 4
    assert rig.sleeps == [0.5, 1.0, 1.5]  # min(cap, base * 2**n); none after the last


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    from stratus.agents import CallScope, ToolContext

    class FiveSecondsLeft:
        def remaining_s(self) -> float:
            return 5.0

    rig = make_rig(cloud)
    fake_model.inject(Fault(status=429, retry_after=10, times=-1))
    runner = rig.runner("triage")
    scope = CallScope("tenant-a", "triage", "request", "r-ra", replayable=False)
    ctx = ToolContext("tenant-a", "triage", "r-ra", rig.settings, scope)
    with pytest.raises(ModelRateLimited) as raised:
        runner.run(TEXT, ctx=ctx, deadline=FiveSecondsLeft())
    assert rig.sleeps == []  # 10 s do not fit in the 5 s left: no waiting
    assert raised.value.headers == {"Retry-After": "10"}
    assert fake_model.call_count() == 2  # one attempt per model of the chain


def test_an_exhausted_key_moves_traffic_to_the_other(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    set_keys(cloud, "sk-key-one", "sk-key-two")
    rig = make_rig(cloud)
    fake_model.inject(Fault(status=429, retry_after=30, api_key="sk-key-one", times=-1))
    fake_model.inject(Fault(status=429, retry_after=30, api_key="sk-key-two", times=0))
    for i in range(4):
        rig.run("triage", TEXT, scope_id=f"r-{i}")
    # At most one request ever reached the exhausted key: after its 429 the fleet-wide
    # cool-down (limits table) sends everything to the other key without trying it.
    assert fake_model.call_count(api_key="sk-key-one") <= 1
    assert fake_model.call_count(api_key="sk-key-two") == 4
    assert rig.sleeps == []  # moving to another key needs no waiting


def test_calls_go_to_the_least_loaded_key(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    set_keys(cloud, "sk-key-one", "sk-key-two")
    rig = make_rig(cloud)
    for i in range(6):
        rig.run("triage", TEXT, scope_id=f"r-{i}")
    one = fake_model.call_count(api_key="sk-key-one")
    two = fake_model.call_count(api_key="sk-key-two")
    assert one + two == 6 and abs(one - two) <= 1


def test_every_key_at_its_rpm_limit_is_a_clear_503(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, key_rpm=2)
    rig.run("triage", TEXT, scope_id="r-1")
    rig.run("triage", TEXT, scope_id="r-2")
    with pytest.raises(ModelRateLimited) as caught:
        rig.run("triage", TEXT, scope_id="r-3")
    assert caught.value.status == 503 and caught.value.code == "model_rate_limited"
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 60
    assert fake_model.call_count() == 2


def test_primary_model_down_the_fallback_answers(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    fake_model.inject(Fault(status=503, model="gpt-5-mini", times=-1))
    result = rig.run("triage", TEXT)
    assert result.model == "gpt-4.1-mini"
    assert result.fallback_from == ["gpt-5-mini"]
    assert fake_model.call_count(model="gpt-5-mini") == 3
    assert fake_model.call_count(model="gpt-4.1-mini") == 1


def test_breaker_opens_after_repeated_failures_and_closes_after_a_probe(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, breaker_failures=2, breaker_open_s=30)
    fake_model.inject(Fault(status=500, model="gpt-5-mini", times=-1))
    first = rig.run("triage", TEXT, scope_id="r-1")
    assert first.model == "gpt-4.1-mini"
    assert fake_model.call_count(model="gpt-5-mini") == 2  # opened at the 2nd failure
    state = rig.gateway.breaker.state(rig.gateway.client.endpoint, "gpt-5-mini")
    assert float(state["opened_until"]) == pytest.approx(rig.clock.now + 30)

    # Open: the model is skipped fleet-wide without a request.
    second = rig.run("triage", TEXT, scope_id="r-2")
    assert second.model == "gpt-4.1-mini"
    assert fake_model.call_count(model="gpt-5-mini") == 2

    # Half-open after the cool-down: one probe; it fails, the breaker opens again.
    rig.clock.now += 31
    third = rig.run("triage", TEXT, scope_id="r-3")
    assert third.model == "gpt-4.1-mini"
    assert fake_model.call_count(model="gpt-5-mini") == 3

    # The provider recovers; the next probe succeeds and closes the breaker.
    fake_model.reset()
    rig.clock.now += 31
    fourth = rig.run("triage", TEXT, scope_id="r-4")
    assert fourth.model == "gpt-5-mini" and not fourth.fallback_from
    state = rig.gateway.breaker.state(rig.gateway.client.endpoint, "gpt-5-mini")
    assert "opened_until" not in state and int(state["failures"]) == 0
    fifth = rig.run("triage", TEXT, scope_id="r-5")
    assert fifth.model == "gpt-5-mini"


def test_everything_down_is_a_clear_503_and_releases_the_budget(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    fake_model.inject(Fault(status=500, times=-1))
    with pytest.raises(ModelUnavailable) as caught:
        rig.run("triage", TEXT)
    assert caught.value.status == 503 and caught.value.code == "model_unavailable"
    assert [a["model"] for a in caught.value.details["attempts"]] == ["gpt-5-mini", "gpt-4.1-mini"]
    from tests.functional.gateway_support import today

    assert rig.committed(f"TENANT#tenant-a#DAY#{today()}") == 0


def test_no_attempt_outlives_the_deadline(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    from stratus.agents import CallScope, ToolContext

    class Left:
        def __init__(self, seconds: float) -> None:
            import time

            self.end = time.monotonic() + seconds

        def remaining_s(self) -> float:
            import time

            return self.end - time.monotonic()

    rig = make_rig(cloud, model_max_attempts=1)
    # The provider would answer after 12 s; the function has 6 s left.
    fake_model.inject(Fault(status=200, delay_s=12.0, times=-1))
    runner = rig.runner("triage")
    scope = CallScope("tenant-a", "triage", "request", "r-dl", replayable=False)
    ctx = ToolContext("tenant-a", "triage", "r-dl", rig.settings, scope)
    import time

    started = time.monotonic()
    with pytest.raises((ModelUnavailable, DeadlineExceeded)):
        runner.run(TEXT, ctx=ctx, deadline=Left(6.0))
    # Each attempt is cut at what is left minus the 1.5 s margin, and no fallback
    # starts without time for it: the run ends before the deadline, never after
    # the provider's 12 s. (The bound is the mechanism's, with seconds to spare.)
    assert time.monotonic() - started < 6.0
    assert fake_model.call_count() <= 1

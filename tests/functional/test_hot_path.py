"""The gateway's critical path in DynamoDB round trips (issue 11), on moto in-process.

Every call is measured with :func:`bench.roundtrips.recording` and 5 ms injected into
each AWS request, so that requests issued together overlap (one round trip) and
requests issued one after another do not. Each measured call comes after a warm-up
call of the same process: a warm process has its tenant limits, model keys, breaker
and key-bucket copies (the first call of a process reads those in its pre-call wave).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bench.roundtrips import Trace, recording
from infra.local.fake_model import FakeModelServer, Fault
from stratus.breaker import wait_for_refreshes
from tests.functional.gateway_support import Clock, make_rig, run_now, today
from tests.support import api_event, call

TEXT = "I was billed twice"
LATENCY_S = 0.05  # long enough that calls issued together overlap on a loaded machine


def _why(trace: Trace) -> str:
    return "DynamoDB waves:\n" + "\n".join(trace.describe("dynamodb"))


def test_a_model_call_is_two_round_trips_and_at_most_eight_requests(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, spawn=run_now)
    # A request scope with three budget scopes: its task, the tenant's day and month.
    assert [b.name for b in rig.gateway.budgets.scopes(_scope("r-0"), "triage")] == [
        "task",
        "tenant_day",
        "tenant_month",
    ]
    rig.run("triage", TEXT, scope_id="r-0", replayable=False)  # the warm-up
    with recording(latency_s=LATENCY_S) as trace:
        result = rig.run("triage", TEXT, scope_id="r-1", replayable=False)
    assert result.model_calls == 1
    assert trace.round_trips("dynamodb") <= 2, _why(trace)
    assert trace.requests("dynamodb") <= 8, _why(trace)
    # ...and still everything is written when the call returns.
    day = f"TENANT#tenant-a#DAY#{today()}"
    assert rig.committed(day) == rig.spent(day) > 0


def test_the_first_call_of_a_process_reads_its_copies_inside_the_pre_call_wave(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, spawn=run_now)
    rig.gateway.budgets.tenant_limits("tenant-a")  # the tenant's limits (cached a minute)
    with recording(latency_s=LATENCY_S) as trace:
        rig.run("triage", TEXT, scope_id="r-1", replayable=False)
    # The breaker items are read together with the reservation, not before it.
    waves = trace.waves("dynamodb")
    # Before the settlement wave: one wave, besides the key bucket's own chain (the first
    # read of the process's bucket copy, then the take). That chain is launched in the
    # first wave; on a loaded machine its read may start after the others ended, so it is
    # not counted by overlap (which is timing, not structure).
    *before, settle = waves
    bucket_chain = {"BatchGetItem", "UpdateItem"}
    rest = [
        [c for c in wave if not (c.table.endswith("-limits") and c.operation in bucket_chain)]
        for wave in before
    ]
    assert len([wave for wave in rest if wave]) == 1, _why(trace)
    assert len(before) <= 3 and {c.table for c in settle} == {"stratus-test-budgets"}, _why(trace)
    assert any(c.operation == "GetItem" for c in waves[0]), _why(trace)
    assert any(c.operation == "UpdateItem" for c in waves[0]), _why(trace)


def test_a_ledger_replay_costs_two_round_trips_and_no_provider_call(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, spawn=run_now)
    first = rig.run("triage", TEXT, kind="job", scope_id="job-1")
    assert fake_model.call_count() == 1
    day = f"TENANT#tenant-a#DAY#{today()}"
    spent = rig.spent(day)
    with recording(latency_s=LATENCY_S) as trace:
        again = rig.run("triage", TEXT, kind="job", scope_id="job-1")
    assert again.ledger_hits == 1 and again.output == first.output
    assert fake_model.call_count() == 1
    # The pre-call wave (lookup, reservation, key take), then its undo with the hit count.
    assert trace.round_trips("dynamodb") <= 2, _why(trace)
    assert rig.spent(day) == spent and rig.committed(day) == spent  # nothing held


def test_an_idempotent_invoke_is_three_round_trips(
    serve_agent: Any, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.handlers import api

    # Long enough that no copy goes stale between the two calls (wall clock here).
    monkeypatch.setenv("STRATUS_GATEWAY_STATE_CACHE_S", "60")
    serve_agent("triage")
    warm = call(api.lambda_handler, _invoke("k-warm"))
    assert warm.status == 200, warm.body
    wait_for_refreshes()
    with recording(latency_s=LATENCY_S) as trace:
        reply = call(api.lambda_handler, _invoke("k-measured"))
    assert reply.status == 200, reply.body
    # The record's put; the pre-call wave; the post-call wave with the record's save.
    assert trace.round_trips("dynamodb") <= 3, _why(trace)
    last = trace.waves("dynamodb")[-1]
    assert {c.operation for c in last} >= {"UpdateItem"}, _why(trace)
    # Everything was written before the answer: a replay is served from the record.
    again = call(api.lambda_handler, _invoke("k-measured"))
    assert again.status == 200 and again.body == reply.body
    assert fake_model.call_count() == 2


def test_a_breaker_opened_by_another_process_is_honoured_within_the_cache_window(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    clock = Clock()
    settings: dict[str, Any] = {
        "breaker_failures": 2,
        "breaker_open_s": 30,
        "gateway_state_cache_s": 2.0,
    }
    here = make_rig(cloud, clock=clock, spawn=run_now, **settings)
    there = make_rig(cloud, clock=clock, spawn=run_now, **settings)
    here.run("triage", TEXT, scope_id="r-warm")  # this process now has a closed copy
    fake_model.inject(Fault(status=500, model="gpt-5-mini", times=-1))
    opened = there.run("triage", TEXT, scope_id="r-open")
    assert opened.model == "gpt-4.1-mini"  # the other process opened the breaker
    fake_model.reset()  # the provider recovers; the breaker stays open for 30 s
    # Its own process honours it at once (its writes update its copy).
    assert there.run("triage", TEXT, scope_id="r-there").model == "gpt-4.1-mini"

    # Within the window this process's copy is the one it read: the documented
    # let-through, one call to the model whose breaker is open elsewhere.
    clock.now += 1.0
    let_through = here.run("triage", TEXT, scope_id="r-1")
    assert let_through.model == "gpt-5-mini"
    assert fake_model.call_count(model="gpt-5-mini") == 1

    # Past the window the copy is refreshed (here inline; in a function, on a
    # background thread while the pre-call wave runs) and the model is skipped.
    clock.now += 1.5
    skipped = here.run("triage", TEXT, scope_id="r-2")
    assert skipped.model == "gpt-4.1-mini" and skipped.fallback_from == ["gpt-5-mini"]
    assert fake_model.call_count(model="gpt-5-mini") == 1


def test_inside_deferred_the_call_returns_before_its_post_call_wave(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, spawn=run_now)
    budgets = rig.gateway.budgets
    settle, release = budgets.settle, threading.Event()

    def slow_settle(*args: Any, **kwargs: Any) -> None:
        assert release.wait(10)
        settle(*args, **kwargs)

    budgets.settle = slow_settle  # type: ignore[method-assign]
    day = f"TENANT#tenant-a#DAY#{today()}"
    with rig.gateway.deferred():
        result = rig.run("triage", TEXT, scope_id="r-d", replayable=False)
        assert result.cost_usd > 0
        assert rig.spent(day) == 0  # returned while its settlement waits
        release.set()
    assert rig.spent(day) == result.cost_usd  # leaving the context waited for it


def test_a_failed_deferred_write_is_logged_and_never_fails_the_call(
    cloud: dict[str, Any], fake_model: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(cloud, spawn=run_now)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("DynamoDB went away")

    rig.gateway.budgets.settle = broken  # type: ignore[method-assign]
    with rig.gateway.deferred():
        result = rig.run("triage", TEXT, scope_id="r-f", replayable=False)
    assert result.model == "gpt-5-mini"
    assert "gateway bookkeeping write failed" in caplog.text


def _scope(scope_id: str) -> Any:
    from stratus.agents import CallScope

    return CallScope("tenant-a", "triage", "request", scope_id, replayable=False)


def _invoke(key: str) -> dict[str, Any]:
    return api_event("triage", body={"input": "hi"}, headers={"Idempotency-Key": key})

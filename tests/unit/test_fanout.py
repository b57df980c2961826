"""run_all: a wave of callables run together, deadlock-free when nested or crowded."""

from __future__ import annotations

import threading
import time

import pytest

from stratus import fanout
from stratus.fanout import run_all, values


def test_outcomes_come_back_in_order_with_errors_kept() -> None:
    def boom() -> int:
        raise ValueError("no")

    outcomes = run_all([lambda: 1, boom, lambda: 3])
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[0].get() == 1 and outcomes[2].get() == 3
    assert isinstance(outcomes[1].error, ValueError)
    with pytest.raises(ValueError):
        values(outcomes)
    assert values(run_all([lambda: "a", lambda: "b"])) == ["a", "b"]
    assert run_all([]) == []


def test_callables_run_at_the_same_time() -> None:
    barrier = threading.Barrier(3, timeout=5)
    # Each waits for the other two: only possible if all three run together.
    assert values(run_all([barrier.wait, barrier.wait, barrier.wait])) is not None


def test_nested_waves_from_more_callers_than_threads_finish() -> None:
    """Every pool thread busy with an outer wave that waits on inner waves: caller-runs."""

    def inner() -> int:
        return sum(values(run_all([lambda: 1, lambda: 1, lambda: 1])))

    def outer() -> int:
        time.sleep(0.001)
        return sum(values(run_all([inner, inner, inner, inner])))

    callers = fanout.POOL_THREADS * 2
    results: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        total = outer()
        with lock:
            results.append(total)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [12] * callers


def test_started_callable_runs_on_the_pool_and_its_outcome_is_kept() -> None:
    ran_on: list[str] = []

    def work() -> int:
        ran_on.append(threading.current_thread().name)
        return 7

    started = fanout.Started(work)
    assert started.wait().get() == 7
    assert ran_on and ran_on[0].startswith("stratus-wave")
    failed = fanout.Started(lambda: 1 / 0).wait()
    assert isinstance(failed.error, ZeroDivisionError)


def test_started_callable_runs_on_the_caller_when_no_thread_takes_it() -> None:
    """Every pool thread held: the waiter runs the callable itself after the grace."""
    release = threading.Event()
    holders = [fanout.Started(release.wait) for _ in range(fanout.POOL_THREADS)]
    try:
        started = fanout.Started(lambda: threading.current_thread().name)
        assert started.wait().get() == threading.current_thread().name
    finally:
        release.set()
        for holder in holders:
            holder.wait()

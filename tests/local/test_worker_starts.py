"""Cold starts of one function take turns, so that many at once do not thrash the cores.

Ten agent-function cold starts at once on a two-core machine took 16 to 20 s each
instead of 1.2 s, and some overran the init timeout. The pool lets at most
``init_parallelism`` workers of a function run their init at once; an invocation waits
for a turn (not counted as init time), and is throttled if none frees up in time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from infra.local.lambda_pool import Pool, init_parallelism
from infra.local.lambda_runtime import FunctionConfig, LambdaRuntime, TooManyRequests

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_runtime() -> Iterator[Callable[..., LambdaRuntime]]:
    runtimes: list[LambdaRuntime] = []

    def _make(init_s: float, **kwargs: Any) -> LambdaRuntime:
        config = FunctionConfig(
            name="slow",
            handler="tests.local.handlers.slow_init.handler",
            environment={"SLOW_INIT_S": str(init_s)},
            timeout_s=10.0,
            max_concurrency=4,
        )
        runtime = LambdaRuntime([config], cwd=REPO, log_sink=lambda line: None, **kwargs)
        runtimes.append(runtime)
        return runtime

    yield _make
    for runtime in runtimes:
        runtime.stop()


def test_the_inits_of_concurrent_cold_starts_do_not_overlap(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(0.3, init_parallelism=1)

    # Each invocation holds its worker for a second, so each needs a worker of its own.
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: runtime.invoke("slow", {"sleep": 1.0}), range(3)))

    assert all(result.ok for result in results), [result.error for result in results]
    assert all(result.cold_start for result in results)
    assert len({result.payload["pid"] for result in results}) == 3
    inits = sorted(tuple(result.payload["init"]) for result in results)
    for (_, ended), (started, _) in itertools.pairwise(inits):
        assert started >= ended, inits  # one init at a time


def test_two_turns_let_two_inits_run_together(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(2.0, init_parallelism=2)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: runtime.invoke("slow", {}), range(2)))

    assert all(result.ok for result in results)
    (_, end_a), (start_b, _) = sorted(tuple(r.payload["init"]) for r in results)
    assert start_b < end_a  # the second started while the first was still importing


def test_an_invocation_that_finds_no_turn_in_time_is_throttled_and_the_pool_recovers(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(2.0, init_parallelism=1, acquire_timeout_s=0.3)

    def one(_: int) -> str:
        try:
            result = runtime.invoke("slow", {})
        except TooManyRequests as throttled:
            return str(throttled)
        return "ok" if result.ok else repr(result.error)

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = sorted(pool.map(one, range(2)))

    assert outcomes[0] == "ok"
    assert outcomes[1] == "slow: 1 workers starting for 0.3 s"
    # Nothing was held by the throttled one: the warm worker serves the next call.
    again = runtime.invoke("slow", {})
    assert again.ok and not again.cold_start


def test_the_default_is_one_turn_per_core_and_at_least_two() -> None:
    assert init_parallelism() >= 2
    config = FunctionConfig(name="f", handler="m.h", environment={}, timeout_s=1.0)
    assert Pool(config, 10).starts == init_parallelism()
    with pytest.raises(ValueError, match="starts must be at least 1"):
        Pool(config, 10, starts=0)

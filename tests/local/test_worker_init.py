"""The local Lambda worker's init phase runs the handler's before-snapshot hooks.

Lambda's init phase imports the handler module and then (with SnapStart, before
the snapshot) calls the hooks registered with
``snapshot_restore_py.register_before_snapshot``; the local worker does the same
on every init and counts them in ``init_ms``, so priming is paid before the first
request locally too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.lambda_runtime import FunctionConfig, LambdaRuntime
from tests.local.handlers.primed import PRIME_S

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_runtime() -> Iterator[Callable[..., LambdaRuntime]]:
    runtimes: list[LambdaRuntime] = []

    def _make(*functions: FunctionConfig) -> LambdaRuntime:
        runtime = LambdaRuntime(functions, cwd=REPO, log_sink=lambda line: None)
        runtimes.append(runtime)
        return runtime

    yield _make
    for runtime in runtimes:
        runtime.stop()


def _fn(name: str, handler: str, **kwargs: Any) -> FunctionConfig:
    return FunctionConfig(
        name=name,
        handler=f"tests.local.handlers.{handler}",
        environment={},
        timeout_s=10.0,
        max_concurrency=1,
        **kwargs,
    )


def test_the_hooks_run_once_at_init_after_the_import_and_count_as_init(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(_fn("primed", "primed.handler"))

    first = runtime.invoke("primed", {})
    second = runtime.invoke("primed", {})

    assert first.ok and second.ok
    pid = first.payload["pid"]
    # Ran once, with its arguments, after the module finished importing, in the worker.
    assert first.payload["events"] == [f"prime:True:{pid}"]
    assert second.payload["events"] == [f"prime:True:{pid}"]  # not again when warm
    assert first.cold_start and not second.cold_start
    # The hook sleeps PRIME_S: init_ms includes it (a lower bound, never a flaky upper one).
    assert first.init_duration_ms is not None
    assert first.init_duration_ms >= PRIME_S * 1000.0


def test_a_failing_hook_fails_the_init_like_lambda(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(_fn("prime_fails", "prime_fails.handler"))

    first = runtime.invoke("prime_fails", {})
    second = runtime.invoke("prime_fails", {})

    for result in (first, second):
        assert result.error is not None
        assert result.error["errorType"] == "Runtime.BeforeSnapshotError"
        assert "price table unreadable" in result.error["errorMessage"]
        assert any("prime_fails.py" in frame for frame in result.error["stackTrace"])
        assert result.cold_start is True  # the failed environment is discarded


def test_a_handler_that_registers_no_hooks_inits_as_before(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(_fn("counter", "counter.handler"))
    result = runtime.invoke("counter", {})
    assert result.ok and result.payload["count"] == 1

"""The local Lambda runtime, with real worker processes running real handler modules."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.lambda_runtime import (
    FunctionConfig,
    FunctionNotFound,
    InvokeResult,
    LambdaRuntime,
    RuntimeStopped,
    TooManyRequests,
)

REPO = Path(__file__).resolve().parents[2]
HANDLERS = "tests.local.handlers"


def fn(name: str, handler: str, **kwargs: Any) -> FunctionConfig:
    kwargs.setdefault("environment", {})
    kwargs.setdefault("timeout_s", 5.0)
    return FunctionConfig(name=name, handler=f"{HANDLERS}.{handler}", **kwargs)


class Logs(list[str]):
    """A log sink that tests can wait on (lines arrive from reader threads)."""

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self):
                if predicate(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no matching log line in {list(self)!r}")


@pytest.fixture
def logs() -> Logs:
    return Logs()


@pytest.fixture
def make_runtime(logs: Logs) -> Iterator[Callable[..., LambdaRuntime]]:
    runtimes: list[LambdaRuntime] = []

    def _make(*functions: FunctionConfig, **kwargs: Any) -> LambdaRuntime:
        kwargs.setdefault("cwd", REPO)
        kwargs.setdefault("log_sink", logs.append)
        runtime = LambdaRuntime(functions, **kwargs)
        runtimes.append(runtime)
        return runtime

    yield _make
    for runtime in runtimes:
        runtime.stop()


def worker_pids(besides: frozenset[int] = frozenset()) -> set[int]:
    """Live child processes of this test process that are Lambda workers, less
    ``besides`` (another local cloud in this test process, e.g. a session fixture's)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"infra.local.lambda_worker" in cmdline:
            pids.add(int(entry.name))
    return pids - besides


def gone(pid: int) -> bool:
    """True once the process no longer exists at all (killed *and* reaped, no zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_environment_and_context_reach_the_handler(
    make_runtime: Callable[..., LambdaRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_ONLY_IN_THE_PARENT", "leak")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    runtime = make_runtime(
        fn(
            "stratus-test-echo",
            "echo.handler",
            environment={"STRATUS_STAGE": "test", "POWERTOOLS_SERVICE_NAME": "stratus"},
            timeout_s=7,
            memory_mb=256,
        )
    )
    names = [
        "STRATUS_STAGE",
        "POWERTOOLS_SERVICE_NAME",
        "STRATUS_ONLY_IN_THE_PARENT",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_TIMEOUT",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_EXECUTION_ENV",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
        "PATH",
    ]
    result = runtime.invoke(
        "stratus-test-echo", {"env": names, "hello": "wörld"}, request_id="req-123"
    )

    assert result.ok, result.error
    assert result.request_id == "req-123"
    assert result.cold_start is True
    assert result.init_duration_ms is not None and result.init_duration_ms > 0
    payload = result.payload
    assert payload["event"]["hello"] == "wörld"
    env = payload["env"]
    assert env["STRATUS_STAGE"] == "test"
    assert env["POWERTOOLS_SERVICE_NAME"] == "stratus"
    assert env["STRATUS_ONLY_IN_THE_PARENT"] is None  # only a minimal base env is inherited
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "stratus-test-echo"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "7"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/stratus-test-echo"
    assert "[$LATEST]" in env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert env["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
    assert env["LAMBDA_TASK_ROOT"] == str(REPO) == payload["cwd"]
    assert env["_HANDLER"] == "tests.local.handlers.echo.handler"
    assert env["PATH"]

    context = payload["context"]
    assert context == {
        "function_name": "stratus-test-echo",
        "function_version": "$LATEST",
        "invoked_function_arn": (
            "arn:aws:lambda:eu-west-1:000000000000:function:stratus-test-echo"
        ),
        "memory_limit_in_mb": "256",  # a string, as the real Python runtime gives it
        "aws_request_id": "req-123",
        "log_group_name": env["AWS_LAMBDA_LOG_GROUP_NAME"],
        "log_stream_name": env["AWS_LAMBDA_LOG_STREAM_NAME"],
        "client_context": None,
        "cognito_identity_id": None,
    }
    assert runtime.names == ["stratus-test-echo"]
    assert runtime.function("stratus-test-echo").memory_mb == 256


def test_remaining_time_counts_down_from_the_timeout(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(fn("echo", "echo.handler", timeout_s=2.0))

    result = runtime.invoke("echo", {"sleep": 0.3})

    assert result.ok, result.error
    first, second = result.payload["remaining_ms"]
    assert 1500 < first <= 2000
    assert second <= first - 250


def test_warm_reuse_then_a_fresh_worker_after_a_timeout(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(fn("counter", "counter.handler", timeout_s=1.0, max_concurrency=1))

    first = runtime.invoke("counter", {})
    second = runtime.invoke("counter", {})
    assert (first.payload["count"], first.cold_start) == (1, True)
    assert (second.payload["count"], second.cold_start) == (2, False)
    assert second.payload["pid"] == first.payload["pid"]
    assert second.init_duration_ms is None

    timed_out = runtime.invoke("counter", {"sleep": 5}, request_id="slow-1")
    assert timed_out.error is not None
    assert timed_out.error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in timed_out.error["errorMessage"]
    assert timed_out.payload is None
    assert gone(first.payload["pid"])  # killed and reaped, not a zombie

    fresh = runtime.invoke("counter", {})
    assert (fresh.payload["count"], fresh.cold_start) == (1, True)  # module state re-initialised
    assert fresh.payload["pid"] != first.payload["pid"]


def test_a_handler_exception_comes_back_in_lambdas_shape(
    make_runtime: Callable[..., LambdaRuntime], logs: Logs
) -> None:
    runtime = make_runtime(fn("raiser", "raiser.handler"))

    result = runtime.invoke("raiser", {"message": "order A-1 rejected"}, request_id="r-1")
    again = runtime.invoke("raiser", {})

    assert not result.ok and result.payload is None
    error = result.error
    assert error is not None
    assert error["errorType"] == "OrderRejected"
    assert error["errorMessage"] == "order A-1 rejected"
    trace = error["stackTrace"]
    assert all(isinstance(frame, str) for frame in trace)
    assert "raiser.py" in trace[0] and "in handler" in trace[0]
    assert "in _check" in trace[-1]
    assert not any("lambda_worker" in frame for frame in trace)
    assert again.cold_start is False  # the worker survives a handler error
    logs.wait_for(lambda line: "[ERROR] OrderRejected: order A-1 rejected" in line)


def test_an_import_error_at_init_is_runtime_import_module_error(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(fn("broken", "broken_import.handler"))

    first = runtime.invoke("broken", {})
    second = runtime.invoke("broken", {})

    for result in (first, second):
        assert result.error is not None
        assert result.error["errorType"] == "Runtime.ImportModuleError"
        assert (
            "Unable to import module 'tests.local.handlers.broken_import'"
            in (result.error["errorMessage"])
        )
        assert result.cold_start is True  # the failed environment is discarded


def test_a_missing_handler_function_is_handler_not_found(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(fn("nohandler", "echo.no_such_function"))

    result = runtime.invoke("nohandler", {})

    assert result.error is not None
    assert result.error["errorType"] == "Runtime.HandlerNotFound"


def test_a_worker_that_exits_mid_invoke_is_runtime_exit_error(
    make_runtime: Callable[..., LambdaRuntime], logs: Logs
) -> None:
    runtime = make_runtime(fn("exiter", "exiter.handler"))

    result = runtime.invoke("exiter", {}, request_id="x-1")
    again = runtime.invoke("exiter", {})

    assert result.error is not None
    assert result.error["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in result.error["errorMessage"]
    assert again.cold_start is True
    logs.wait_for(lambda line: line == "[exiter] [x-1] about to exit")


def test_results_are_marshalled_like_lambda_does(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(
        fn("sets", "echo.unmarshalable"),
        fn("decimals", "echo.decimals"),
    )

    bad = runtime.invoke("sets", {})
    good = runtime.invoke("decimals", {})

    assert bad.error is not None
    assert bad.error["errorType"] == "Runtime.MarshalError"
    assert "not JSON serializable" in bad.error["errorMessage"]
    assert runtime.invoke("sets", {}).cold_start is False  # still warm
    assert good.payload == {"count": 3, "price": 1.25}  # Decimals, as DynamoDB returns them


def _invoke_in_parallel(runtime: LambdaRuntime, name: str, events: list[Any]) -> list[InvokeResult]:
    results: list[InvokeResult | None] = [None] * len(events)

    def run(index: int) -> None:
        results[index] = runtime.invoke(name, events[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(events))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def test_concurrent_invocations_use_up_to_max_concurrency_workers(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(
        fn("wide", "sleeper.handler", max_concurrency=2),
        fn("narrow", "sleeper.handler", max_concurrency=1),
    )

    a, b = _invoke_in_parallel(runtime, "wide", [{"sleep": 0.8}, {"sleep": 0.8}])
    assert a.ok and b.ok
    assert a.payload["pid"] != b.payload["pid"]
    assert a.payload["started"] < b.payload["ended"] and b.payload["started"] < a.payload["ended"]

    c, d = _invoke_in_parallel(runtime, "narrow", [{"sleep": 0.4}, {"sleep": 0.4}])
    assert c.ok and d.ok
    assert c.payload["pid"] == d.payload["pid"]  # the second waited for the only worker
    first, second = sorted((c.payload, d.payload), key=lambda p: p["started"])
    assert second["started"] >= first["ended"]


def test_too_many_requests_when_no_worker_frees_up_in_time(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    others = frozenset(worker_pids())
    runtime = make_runtime(
        fn("narrow", "sleeper.handler", max_concurrency=1), acquire_timeout_s=0.2
    )
    busy = threading.Thread(target=runtime.invoke, args=("narrow", {"sleep": 1.5}))
    busy.start()
    try:
        deadline = time.monotonic() + 10
        while not worker_pids(others) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # let the first invocation take the only worker
        with pytest.raises(TooManyRequests):
            runtime.invoke("narrow", {"sleep": 0})
    finally:
        busy.join(10)


def test_output_reaches_the_log_sink_and_never_the_protocol(
    make_runtime: Callable[..., LambdaRuntime], logs: Logs
) -> None:
    runtime = make_runtime(fn("chatty", "chatty.handler"))

    result = runtime.invoke("chatty", {"tag": "t1"}, request_id="rid-1")

    assert result.ok and result.payload == {"protocol": "intact"}
    logs.wait_for(lambda line: line == "[chatty] chatty init line")  # init: no request yet
    logs.wait_for(lambda line: line == "[chatty] [rid-1] plain text t1")
    logs.wait_for(lambda line: line == "[chatty] [rid-1] to stderr t1")
    json_line = logs.wait_for(lambda line: line.startswith("[chatty] {"))
    assert json.loads(json_line.removeprefix("[chatty] ")) == {
        "level": "INFO",
        "message": "json t1",
        "function_request_id": "rid-1",
    }
    # The stdlib root handler the Lambda runtime installs carries the request id itself.
    logged = logs.wait_for(lambda line: "logged t1" in line)
    assert logged.startswith("[chatty] [WARNING]\t") and "\trid-1\t" in logged
    assert "[chatty] START RequestId: rid-1 Version: $LATEST" in logs
    logs.wait_for(lambda line: line.startswith("[chatty] REPORT RequestId: rid-1\tDuration: "))


def test_unknown_function(make_runtime: Callable[..., LambdaRuntime]) -> None:
    runtime = make_runtime(fn("echo", "echo.handler"))

    with pytest.raises(FunctionNotFound):
        runtime.invoke("nope", {})
    with pytest.raises(KeyError):
        runtime.function("nope")


def test_stop_kills_and_reaps_every_worker_and_closes_every_fd(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    others = frozenset(worker_pids())  # workers of other runtimes this process holds
    fds_before = open_fds()
    runtime = make_runtime(
        fn("echo", "echo.handler"),
        fn("sleeper", "sleeper.handler", timeout_s=30.0),
        fn("chatty", "chatty.handler"),
    )
    assert runtime.invoke("echo", {}).ok
    assert runtime.invoke("chatty", {"tag": "x"}).ok
    in_flight: list[InvokeResult] = []
    slow = threading.Thread(
        target=lambda: in_flight.append(runtime.invoke("sleeper", {"sleep": 20}))
    )
    slow.start()
    deadline = time.monotonic() + 10
    while len(worker_pids(others)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = worker_pids(others)
    assert len(pids) == 3

    started = time.monotonic()
    runtime.stop()
    runtime.stop()  # idempotent
    slow.join(10)

    assert time.monotonic() - started < 5
    assert in_flight and not in_flight[0].ok  # the busy worker was killed, not waited for
    assert all(gone(pid) for pid in pids)
    assert worker_pids(others) == set()
    assert open_fds() - fds_before == set()  # every descriptor it opened is closed
    with pytest.raises(RuntimeStopped):
        runtime.invoke("echo", {})


def test_context_manager_stops_the_runtime(logs: Logs) -> None:
    with LambdaRuntime([fn("echo", "echo.handler")], cwd=REPO, log_sink=logs.append) as runtime:
        pid = runtime.invoke("echo", {}).payload["pid"]
        assert not gone(pid)
    assert gone(pid)


# --- concurrency per function ------------------------------------------------------------


def test_concurrency_follows_reserved_concurrency_else_a_default_of_ten(
    make_runtime: Callable[..., LambdaRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRATUS_LOCAL_LAMBDA_CONCURRENCY", raising=False)
    runtime = make_runtime(
        fn("reserved", "echo.handler", max_concurrency=3), fn("open", "echo.handler")
    )
    assert fn("x", "echo.handler").max_concurrency is None  # unreserved unless configured
    assert runtime.concurrency("reserved") == 3
    assert runtime.concurrency("open") == 10


def test_the_default_concurrency_is_configurable_when_the_runtime_is_built(
    make_runtime: Callable[..., LambdaRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_LOCAL_LAMBDA_CONCURRENCY", "2")
    from_env = make_runtime(
        fn("open", "echo.handler"), fn("reserved", "echo.handler", max_concurrency=5)
    )
    monkeypatch.setenv("STRATUS_LOCAL_LAMBDA_CONCURRENCY", "7")  # read at build, not later
    assert from_env.concurrency("open") == 2
    assert from_env.concurrency("reserved") == 5  # reserved concurrency still wins
    explicit = make_runtime(fn("open", "echo.handler"), default_concurrency=4)
    assert explicit.concurrency("open") == 4
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv("STRATUS_LOCAL_LAMBDA_CONCURRENCY", bad)
        with pytest.raises(ValueError, match="STRATUS_LOCAL_LAMBDA_CONCURRENCY"):
            LambdaRuntime([fn("open", "echo.handler")], cwd=REPO)


def test_unreserved_functions_run_up_to_the_default_in_parallel(
    make_runtime: Callable[..., LambdaRuntime],
) -> None:
    runtime = make_runtime(fn("open", "sleeper.handler"), default_concurrency=2)
    a, b = _invoke_in_parallel(runtime, "open", [{"sleep": 0.8}, {"sleep": 0.8}])
    assert a.ok and b.ok and a.payload["pid"] != b.payload["pid"]
    assert a.payload["started"] < b.payload["ended"] and b.payload["started"] < a.payload["ended"]

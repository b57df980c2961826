"""Run real Lambda handlers on this machine the way Lambda runs them.

moto cannot execute Lambda code, so the local cloud runs the handlers itself.
Running them in the caller's process would be wrong in ways that hide bugs:
functions have different environments, module-level caches and clients, and a
handler that hangs or crashes would take the whole local cloud with it. So each
function gets its own pool of worker *processes* (:mod:`infra.local.lambda_worker`),
each one a Lambda execution environment:

* started with the function's environment plus Lambda's own variables, it
  imports the handler once (the cold start) and is then reused while warm;
* at most ``max_concurrency`` of them per function (its reserved concurrency; an
  unreserved function gets the runtime's default, 10, or
  ``STRATUS_LOCAL_LAMBDA_CONCURRENCY``); more concurrent invocations wait a
  bounded time, then get :class:`TooManyRequests`;
* at most one worker per core (at least 2) of a function in its init at once: cold
  starts are CPU-bound, and many at once on a small machine thrashed past the init
  timeout. An invocation waiting for a start takes a worker that turns idle meanwhile;
  the wait is not init time (:meth:`~infra.local.lambda_pool.Pool.acquire`);
* the configured timeout is enforced from outside: a worker that overruns is
  killed with its whole process group and the caller gets ``Sandbox.Timedout``;
  the next invocation cold-starts a fresh one, as in Lambda;
* a worker that dies mid-invocation yields ``Runtime.ExitError`` and is dropped.

The protocol runs over two dedicated pipes (one JSON line per message, see the
worker module), so nothing a handler prints can corrupt it. The workers' stdout
and stderr are read line by line and passed to ``log_sink``, prefixed with the
function name (and the request id, for lines that are not JSON), together with
the ``START`` / ``END`` / ``REPORT`` lines Lambda writes to CloudWatch. With an
``AWS_ENDPOINT_URL`` in the base environment (the local cloud), EMF metric lines are
also forwarded to that endpoint's CloudWatch (:mod:`infra.local.emf_forwarder`),
batched, off the invocation path.

**Versions** (a canary, :mod:`infra.local.lambda_versions`): :meth:`LambdaRuntime.add_version`
starts a second version of a function (its own config, environment and code directory,
its own workers), :meth:`LambdaRuntime.route` sets the weighted alias, and
:meth:`LambdaRuntime.invoke` picks a version by weight unless a ``qualifier`` names one
(``$LATEST`` is the primary version; ``live`` or None is the alias). Every caller (the
gateway, the SQS pollers, the Step Functions front) goes through ``invoke``, so all of
them route like the alias. :meth:`LambdaRuntime.version_stats` says what each did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from infra.local.emf_forwarder import MetricForwarder
from infra.local.lambda_pool import Worker, WorkerTimeout, exit_text
from infra.local.lambda_types import (
    BASE_ENV_NAMES,
    BASE_ENV_PREFIXES,
    FunctionConfig,
    FunctionNotFound,
    InvokeResult,
    RuntimeStopped,
    TooManyRequests,
    default_base_env,
)
from infra.local.lambda_versions import PRIMARY, Version, VersionTable

__all__ = [
    "BASE_ENV_NAMES",
    "BASE_ENV_PREFIXES",
    "FunctionConfig",
    "FunctionNotFound",
    "InvokeResult",
    "LambdaRuntime",
    "RuntimeStopped",
    "TooManyRequests",
    "default_base_env",
]

#: How long past the configured timeout the runtime waits before killing a worker.
TIMEOUT_GRACE_S = 0.5
#: Lambda gives the init phase (imports, module-level setup) 10 s of its own.
INIT_TIMEOUT_S = 10.0
#: How long an invocation waits for a free worker before ``TooManyRequests``.
ACQUIRE_TIMEOUT_S = 30.0
#: Workers per function without reserved concurrency (high enough for the test suites).
DEFAULT_CONCURRENCY = 10
#: Overrides ``DEFAULT_CONCURRENCY``; read when a runtime is built (``stratus dev``).
CONCURRENCY_ENV = "STRATUS_LOCAL_LAMBDA_CONCURRENCY"


def _default_concurrency(environ: Mapping[str, str] | None = None) -> int:
    """The cap for unreserved functions: ``STRATUS_LOCAL_LAMBDA_CONCURRENCY`` or 10."""
    raw = (os.environ if environ is None else environ).get(CONCURRENCY_ENV, "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{CONCURRENCY_ENV} must be a whole number of at least 1, not {raw!r}")
    return value


def _now_iso() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _lambda_error(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "errorType": error_type,
        "errorMessage": message,
        "requestId": request_id,
        "stackTrace": [],
    }


class LambdaRuntime(VersionTable):
    """Invoke configured functions synchronously, each in its own warm worker processes.

    Thread-safe: the API gateway, the SQS pollers and the Step Functions front
    all call :meth:`invoke` from their own threads.
    """

    def __init__(
        self,
        functions: Iterable[FunctionConfig],
        *,
        base_env: Mapping[str, str] | None = None,
        log_sink: Callable[[str], None] | None = None,
        cwd: str | Path | None = None,
        account_id: str = "000000000000",
        acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
        platform_logs: bool = True,
        default_concurrency: int | None = None,
        forward_metrics: bool = True,
        init_parallelism: int | None = None,
    ) -> None:
        """``default_concurrency`` caps unreserved functions (None: from the environment);
        ``forward_metrics`` sends EMF lines to the base environment's CloudWatch endpoint;
        ``init_parallelism`` caps the workers of one function in their init at once (None:
        one per core, at least 2)."""
        default = _default_concurrency() if default_concurrency is None else default_concurrency
        super().__init__(
            functions,
            cwd=Path(cwd if cwd is not None else os.getcwd()).resolve(),
            default_concurrency=default,
            drain_timeout_s=acquire_timeout_s,
            init_parallelism=init_parallelism,
        )
        self._base_env = dict(default_base_env() if base_env is None else base_env)
        self._sink = log_sink or _stderr_sink
        self._sink_lock = threading.Lock()
        self._account_id = account_id
        self._acquire_timeout_s = acquire_timeout_s
        self._platform_logs = platform_logs
        self._stopped = False
        self._stop_lock = threading.Lock()
        endpoint = self._base_env.get("AWS_ENDPOINT_URL_CLOUDWATCH") or self._base_env.get(
            "AWS_ENDPOINT_URL"
        )
        self._metrics = (
            MetricForwarder(lambda: self._cloudwatch(str(endpoint)))
            if forward_metrics and endpoint
            else None
        )

    def _cloudwatch(self, endpoint: str) -> Any:
        import boto3

        env = self._base_env
        return boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=env.get("AWS_SESSION_TOKEN"),
            region_name=env.get("AWS_REGION") or "us-east-1",
        ).client("cloudwatch", endpoint_url=endpoint)

    # -- configuration -------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._functions)

    def concurrency(self, name: str) -> int:
        """How many workers ``name`` may run at once."""
        self.function(name)
        return self._versions[name][self._primary[name]].pool.limit

    def function_arn(self, name: str) -> str:
        config = self.function(name)
        return f"arn:aws:lambda:{self._region(config)}:{self._account_id}:function:{name}"

    def _region(self, config: FunctionConfig) -> str:
        env = {**self._base_env, **config.environment}
        return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"

    def worker_env(
        self, config: FunctionConfig, version: str = PRIMARY, config_cwd: Path | None = None
    ) -> dict[str, str]:
        """Base env + the function's variables + the variables Lambda itself sets."""
        env = {**self._base_env, **config.environment}
        region = self._region(config)
        today = datetime.datetime.now(datetime.UTC).strftime("%Y/%m/%d")
        env.update(
            {
                "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region,  # Lambda sets both to the function's region
                "AWS_LAMBDA_FUNCTION_NAME": config.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
                "AWS_LAMBDA_FUNCTION_TIMEOUT": _seconds(config.timeout_s),
                "AWS_LAMBDA_FUNCTION_VERSION": version,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
                # One log stream per execution environment, as in CloudWatch.
                "AWS_LAMBDA_LOG_STREAM_NAME": f"{today}/[{version}]{uuid.uuid4().hex}",
                "AWS_EXECUTION_ENV": (
                    f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}"
                ),
                "LAMBDA_TASK_ROOT": str(config_cwd or self._cwd),
                "_HANDLER": config.handler,
                "TZ": ":UTC",
            }
        )
        env.setdefault("LANG", "en_US.UTF-8")
        return env

    # -- invoking ------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        event: Any,
        *,
        request_id: str | None = None,
        qualifier: str | None = None,
    ) -> InvokeResult:
        """Run the function on ``event`` and wait for its result (RequestResponse).

        ``qualifier``: a version label or ``$LATEST`` (the primary) runs exactly that
        version; None or ``live`` goes through the weighted alias. Handler failures come
        back as ``InvokeResult.error``; only caller mistakes raise
        (:class:`FunctionNotFound`, an event that is not JSON-serialisable,
        :class:`TooManyRequests`, :class:`RuntimeStopped`).
        """
        version, shadow = self._resolve(name, qualifier)
        request_id = request_id or str(uuid.uuid4())
        event_json = json.dumps(event)
        if shadow is not None and shadow is not version:
            threading.Thread(
                target=self._shadow, args=(shadow, event_json), daemon=True, name=f"shadow-{name}"
            ).start()
        return self._invoke_version(version, request_id, event_json)

    def _shadow(self, version: Version, event_json: str) -> None:
        """A copy of an invocation for a shadow version: counted, its answer dropped."""
        with contextlib.suppress(Exception):
            self._invoke_version(version, f"shadow-{uuid.uuid4()}", event_json)

    def _invoke_version(self, version: Version, request_id: str, event_json: str) -> InvokeResult:
        result = self._invoke_pool(version, request_id, event_json)
        version.record.record(result.error, result.payload, result.duration_ms)
        return dataclasses.replace(result, version=version.label)

    def _version_emit(self, version: Version) -> Callable[[str], None]:
        def emit(line: str) -> None:
            if '"CloudWatchMetrics"' in line and (start := line.find("{")) >= 0:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    version.record.record_metrics(json.loads(line[start:]))
            self._emit(line)

        return emit

    def _invoke_pool(self, version: Version, request_id: str, event_json: str) -> InvokeResult:
        config, pool = version.config, version.pool
        worker = pool.acquire(self._acquire_timeout_s)
        cold = worker is None
        init_ms: float | None = None
        if worker is None:
            # The spawn and the init hold one of the function's start turns (see
            # Pool.acquire), so that many cold starts at once do not thrash the cores.
            try:
                try:
                    env = self.worker_env(config, version.label, version.cwd)
                    worker = Worker(config, env, version.cwd, self._version_emit(version))
                except BaseException:
                    pool.unreserve()
                    raise
                pool.register(worker)
                try:
                    init_ms, init_error = self._init(worker, request_id)
                except BaseException:
                    pool.release(worker, keep=False)
                    raise
            finally:
                pool.started()
            if init_error is not None:
                pool.release(worker, keep=False)
                return InvokeResult(request_id, None, init_error, 0.0, True, init_ms)
        keep = False
        try:
            result, keep = self._run(worker, request_id, event_json, cold, init_ms)
            return result
        finally:
            pool.release(worker, keep=keep)

    def _init(self, worker: Worker, request_id: str) -> tuple[float | None, dict[str, Any] | None]:
        """Wait for the worker's init; return its duration or Lambda's error for it."""
        config = worker.config
        limit = max(INIT_TIMEOUT_S, config.timeout_s)
        started = time.monotonic()
        try:
            message = worker.read_message(started + limit)
        except WorkerTimeout:
            worker.kill()
            self._platform(config, f"{_now_iso()} {request_id} Init timed out after {limit:.2f} s")
            text = f"RequestId: {request_id} Error: Task timed out after {limit:.2f} seconds"
            return None, _lambda_error("Sandbox.Timedout", text, request_id)
        if message is None:
            worker.kill()
            text = f"RequestId: {request_id} Error: {exit_text(worker.reap(2.0))}"
            return None, _lambda_error("Runtime.ExitError", text, request_id)
        if message.get("type") != "ready":
            error = dict(message.get("error") or {})
            error["requestId"] = request_id
            kind = error.get("errorType")
            self._platform(config, f"INIT_REPORT Phase: init Status: error Error Type: {kind}")
            return None, error
        # Like Lambda's Init Duration: interpreter start-up plus the handler's imports.
        return (time.monotonic() - worker.spawned) * 1000.0, None

    def _run(
        self,
        worker: Worker,
        request_id: str,
        event_json: str,
        cold: bool,
        init_ms: float | None,
    ) -> tuple[InvokeResult, bool]:
        """One invocation on a ready worker; the bool says whether to keep it warm."""
        config = worker.config
        worker.request_id = request_id
        label = worker.env_version
        self._platform(config, f"START RequestId: {request_id} Version: {label}")
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + config.timeout_s * 1000)
        arn = json.dumps(self.function_arn(config.name))
        # The event is already JSON: splice it in rather than decode and re-encode it.
        line = (
            f'{{"type": "invoke", "request_id": {json.dumps(request_id)}, '
            f'"deadline_ms": {deadline_ms}, "invoked_function_arn": {arn}, '
            f'"event": {event_json}}}\n'
        ).encode()
        kill_at = started + config.timeout_s + TIMEOUT_GRACE_S
        try:
            sent = worker.write_message(line, kill_at)
            message = worker.read_message(kill_at) if sent else None
        except WorkerTimeout:
            worker.kill()
            duration_ms = (time.monotonic() - started) * 1000.0
            text = f"Task timed out after {config.timeout_s:.2f} seconds"
            self._platform(config, f"{_now_iso()} {request_id} {text}")
            error = _lambda_error(
                "Sandbox.Timedout", f"RequestId: {request_id} Error: {text}", request_id
            )
            result = InvokeResult(request_id, None, error, duration_ms, cold, init_ms)
            self._report(worker, result, "timeout")
            return result, False
        duration_ms = (time.monotonic() - started) * 1000.0
        if message is None:
            worker.kill()
            text = exit_text(worker.reap(2.0))
            error = _lambda_error(
                "Runtime.ExitError", f"RequestId: {request_id} Error: {text}", request_id
            )
            result = InvokeResult(request_id, None, error, duration_ms, cold, init_ms)
            self._report(worker, result, "error")
            return result, False
        if message.get("type") == "result":
            result = InvokeResult(
                request_id, message.get("payload"), None, duration_ms, cold, init_ms
            )
        else:
            result = InvokeResult(
                request_id, None, dict(message.get("error") or {}), duration_ms, cold, init_ms
            )
        self._report(worker, result, None)
        return result, True

    # -- logs ----------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        if self._metrics is not None:
            self._metrics.offer(line)
        # A broken sink must not break invocations.
        with self._sink_lock, contextlib.suppress(Exception):
            self._sink(line)

    def _platform(self, config: FunctionConfig, text: str) -> None:
        if self._platform_logs:
            self._emit(f"[{config.name}] {text}")

    def _report(self, worker: Worker, result: InvokeResult, status: str | None) -> None:
        """Lambda's END and REPORT lines for one invocation."""
        if not self._platform_logs:
            return
        config = worker.config
        parts = [
            f"REPORT RequestId: {result.request_id}",
            f"Duration: {result.duration_ms:.2f} ms",
            f"Billed Duration: {math.ceil(result.duration_ms)} ms",
            f"Memory Size: {config.memory_mb} MB",
        ]
        memory = worker.max_memory_mb()
        if memory is not None:
            parts.append(f"Max Memory Used: {memory} MB")
        if result.init_duration_ms is not None:
            parts.append(f"Init Duration: {result.init_duration_ms:.2f} ms")
        if status:
            parts.append(f"Status: {status}")
        self._platform(config, f"END RequestId: {result.request_id}")
        self._platform(config, "\t".join(parts))

    # -- shutdown ------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Kill every worker, reap it and close its pipes. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        for pool in self._all_pools():
            pool.stop(timeout)
        if self._metrics is not None:
            self._metrics.stop(timeout)

    def __enter__(self) -> LambdaRuntime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stderr_sink(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()

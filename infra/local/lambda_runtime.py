"""Run real Lambda handlers on this machine the way Lambda runs them.

moto cannot execute Lambda code, so the local cloud runs the handlers itself.
Running them in the caller's process would be wrong in ways that hide bugs:
functions have different environments, module-level caches and clients, and a
handler that hangs or crashes would take the whole local cloud with it. So each
function gets its own pool of worker *processes* (:mod:`infra.local.lambda_worker`),
each one a Lambda execution environment:

* started with the function's environment plus Lambda's own variables, it
  imports the handler once (the cold start) and is then reused while warm;
* at most ``max_concurrency`` of them per function (reserved concurrency); more
  concurrent invocations wait a bounded time, then get :class:`TooManyRequests`;
* the configured timeout is enforced from outside: a worker that overruns is
  killed with its whole process group and the caller gets ``Sandbox.Timedout``;
  the next invocation cold-starts a fresh one, as in Lambda;
* a worker that dies mid-invocation yields ``Runtime.ExitError`` and is dropped.

The protocol runs over two dedicated pipes (one JSON line per message, see the
worker module), so nothing a handler prints can corrupt it. The workers' stdout
and stderr are read line by line and passed to ``log_sink``, prefixed with the
function name (and the request id, for lines that are not JSON), together with
the ``START`` / ``END`` / ``REPORT`` lines Lambda writes to CloudWatch.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any

WORKER_MODULE = "infra.local.lambda_worker"
#: How long past the configured timeout the runtime waits before killing a worker.
TIMEOUT_GRACE_S = 0.5
#: Lambda gives the init phase (imports, module-level setup) 10 s of its own.
INIT_TIMEOUT_S = 10.0
#: How long an invocation waits for a free worker before ``TooManyRequests``.
ACQUIRE_TIMEOUT_S = 30.0

#: Variables a worker inherits from this process by default; everything else the
#: function needs must come from its configuration, as in AWS.
BASE_ENV_NAMES = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TEMP",
    "TMP",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
BASE_ENV_PREFIXES = ("AWS_", "COVERAGE_")

_SIGNAL_TEXT = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
}


def default_base_env() -> dict[str, str]:
    """The minimal slice of this process's environment a worker starts from."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in BASE_ENV_NAMES or name.startswith(BASE_ENV_PREFIXES)
    }


@dataclass(frozen=True)
class FunctionConfig:
    """One Lambda function as the local runtime needs it (a slice of ``FunctionPlan``)."""

    name: str
    handler: str
    environment: Mapping[str, str]
    timeout_s: float = 30.0
    memory_mb: int = 512
    max_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"{self.name}: timeout_s must be positive")
        if self.max_concurrency < 1:
            raise ValueError(f"{self.name}: max_concurrency must be at least 1")
        bad = [k for k, v in self.environment.items() if not isinstance(v, str)]
        if bad:
            raise TypeError(f"{self.name}: environment values must be strings: {bad}")
        # A private read-only copy: later changes to the caller's dict cannot leak in.
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))


@dataclass(frozen=True)
class InvokeResult:
    """What a synchronous Invoke returns: the payload, or Lambda's error object."""

    request_id: str
    #: The handler's return value, decoded from JSON (None on error, or if it returned None).
    payload: Any
    error: dict[str, Any] | None
    duration_ms: float
    cold_start: bool
    #: How long the handler's module took to import (cold starts only).
    init_duration_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FunctionNotFound(KeyError):
    """No function of that name is configured (Lambda's ResourceNotFoundException)."""


class TooManyRequests(Exception):
    """Every worker of the function stayed busy for the whole wait (Lambda's 429)."""


class RuntimeStopped(RuntimeError):
    """The runtime was stopped; it starts no more workers."""


class _Timeout(Exception):
    pass


def _now_iso() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "Runtime exited without providing a reason"
    if returncode < 0:
        sig = signal.Signals(-returncode)
        return f"Runtime exited with error: signal: {_SIGNAL_TEXT.get(sig, sig.name)}"
    return f"Runtime exited with error: exit status {returncode}"


def _lambda_error(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "errorType": error_type,
        "errorMessage": message,
        "requestId": request_id,
        "stackTrace": [],
    }


class _Worker:
    """One worker process: its pipes, its log readers, and the request it serves."""

    def __init__(
        self,
        config: FunctionConfig,
        env: Mapping[str, str],
        cwd: Path,
        emit: Callable[[str], None],
    ) -> None:
        self.config = config
        self._emit = emit
        #: The request served now (or last): non-JSON log lines are tagged with it.
        self.request_id: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._buffer = bytearray()
        self.spawned = time.monotonic()
        request_r, request_w = os.pipe()
        response_r, response_w = os.pipe()
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-u",
                    "-m",
                    WORKER_MODULE,
                    "--request-fd",
                    str(request_r),
                    "--response-fd",
                    str(response_w),
                    "--parent-pid",
                    str(os.getpid()),
                ],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(request_r, response_w),
                # Own process group: a timeout kills whatever the handler spawned too,
                # and a Ctrl-C in the terminal does not reach the workers directly.
                start_new_session=True,
            )
        except BaseException:
            os.close(request_w)
            os.close(response_r)
            raise
        finally:
            os.close(request_r)
            os.close(response_w)
        self._request_fd = request_w
        self._response_fd = response_r
        os.set_blocking(request_w, False)
        self._poll_in = select.poll()
        self._poll_in.register(response_r, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._poll_out = select.poll()
        self._poll_out.register(request_w, select.POLLOUT | select.POLLERR)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._pump,
                args=(stream,),
                name=f"lambda-log-{config.name}-{self.proc.pid}",
                daemon=True,
            )
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        with self._lock:
            return not self._closed and self.proc.poll() is None

    # -- protocol ------------------------------------------------------------------

    def read_message(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line from the worker; None at EOF; ``_Timeout`` past the deadline."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                message: dict[str, Any] = json.loads(line)
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            if not self._poll_in.poll(max(1, math.ceil(remaining * 1000))):
                continue
            chunk = os.read(self._response_fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk

    def write_message(self, data: bytes, deadline: float) -> bool:
        """Send one message line; False if the worker is gone."""
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            if not self._poll_out.poll(max(1, math.ceil(remaining * 1000))):
                continue
            try:
                written = os.write(self._request_fd, view)
            except BlockingIOError:
                continue
            except BrokenPipeError:
                return False
            view = view[written:]
        return True

    # -- logs ----------------------------------------------------------------------

    def _pump(self, stream: IO[bytes]) -> None:
        """Forward one output stream line by line until the worker closes it."""
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                request_id = self.request_id
                if request_id and not line.lstrip().startswith("{") and request_id not in line:
                    line = f"[{request_id}] {line}"
                self._emit(f"[{self.config.name}] {line}")
        except (OSError, ValueError):
            pass  # the stream was closed under us: the worker is being destroyed

    def max_memory_mb(self) -> int | None:
        """Peak resident memory (Linux only), for the REPORT line."""
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as status:
                for row in status:
                    if row.startswith("VmHWM:"):
                        return math.ceil(int(row.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            return None
        return None

    # -- lifecycle -----------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the worker's process group; never signals a reaped (reusable) pid."""
        with self._lock:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)

    def reap(self, timeout: float) -> int | None:
        """Wait for the process to exit (after EOF) and return its status."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def destroy(self) -> None:
        """Kill, reap, stop the log readers and close every fd. Idempotent."""
        self.kill()
        self.proc.wait()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for fd in (self._request_fd, self._response_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        for reader in self._readers:
            reader.join(timeout=2.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class _Pool:
    """The warm workers of one function and the slots that cap its concurrency."""

    def __init__(self, config: FunctionConfig) -> None:
        self.config = config
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._slots = 0  # workers alive or being started
        self._stopped = False

    def acquire(self, wait_s: float) -> _Worker | None:
        """A warm idle worker, or None when the caller may start a new one (slot taken)."""
        deadline = time.monotonic() + wait_s
        dead: list[_Worker] = []
        try:
            with self._cond:
                while True:
                    if self._stopped:
                        raise RuntimeStopped(f"runtime stopped; cannot invoke {self.config.name}")
                    while self._idle:
                        worker = self._idle.pop()  # most recently used first, like Lambda
                        if worker.alive():
                            self._busy.add(worker)
                            return worker
                        dead.append(worker)  # died while idle: free its slot now
                        self._slots -= 1
                    if self._slots < self.config.max_concurrency:
                        self._slots += 1
                        return None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TooManyRequests(
                            f"{self.config.name}: all {self.config.max_concurrency} workers "
                            f"busy for {wait_s:.1f} s"
                        )
                    self._cond.wait(remaining)
        finally:
            for worker in dead:
                worker.destroy()

    def register(self, worker: _Worker) -> None:
        """Track a freshly started worker as busy, so ``stop`` can kill it."""
        with self._cond:
            if not self._stopped:
                self._busy.add(worker)
                return
        self._discard(worker)
        raise RuntimeStopped(f"runtime stopped; cannot invoke {self.config.name}")

    def unreserve(self) -> None:
        with self._cond:
            self._slots -= 1
            self._cond.notify_all()

    def release(self, worker: _Worker, *, keep: bool) -> None:
        with self._cond:
            self._busy.discard(worker)
            if keep and not self._stopped:
                self._idle.append(worker)
                self._cond.notify()
                return
        self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.destroy()
        self.unreserve()

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopped = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._cond.notify_all()
        for worker in busy:
            worker.kill()  # the invoking thread sees EOF, then destroys it
        for worker in idle:
            self._discard(worker)
        with self._cond:
            self._cond.wait_for(lambda: self._slots <= 0, timeout=timeout)


class LambdaRuntime:
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
    ) -> None:
        self._functions: dict[str, FunctionConfig] = {}
        for config in functions:
            if config.name in self._functions:
                raise ValueError(f"function {config.name!r} configured twice")
            self._functions[config.name] = config
        self._pools = {name: _Pool(config) for name, config in self._functions.items()}
        self._base_env = dict(default_base_env() if base_env is None else base_env)
        self._sink = log_sink or _stderr_sink
        self._sink_lock = threading.Lock()
        self._cwd = Path(cwd if cwd is not None else os.getcwd()).resolve()
        self._account_id = account_id
        self._acquire_timeout_s = acquire_timeout_s
        self._platform_logs = platform_logs
        self._stopped = False
        self._stop_lock = threading.Lock()

    # -- configuration -------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._functions)

    def function(self, name: str) -> FunctionConfig:
        try:
            return self._functions[name]
        except KeyError:
            raise FunctionNotFound(f"Function not found: {name}") from None

    def function_arn(self, name: str) -> str:
        config = self.function(name)
        return f"arn:aws:lambda:{self._region(config)}:{self._account_id}:function:{name}"

    def _region(self, config: FunctionConfig) -> str:
        env = {**self._base_env, **config.environment}
        return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"

    def worker_env(self, config: FunctionConfig) -> dict[str, str]:
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
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
                # One log stream per execution environment, as in CloudWatch.
                "AWS_LAMBDA_LOG_STREAM_NAME": f"{today}/[$LATEST]{uuid.uuid4().hex}",
                "AWS_EXECUTION_ENV": (
                    f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}"
                ),
                "LAMBDA_TASK_ROOT": str(self._cwd),
                "_HANDLER": config.handler,
                "TZ": ":UTC",
            }
        )
        env.setdefault("LANG", "en_US.UTF-8")
        return env

    # -- invoking ------------------------------------------------------------------

    def invoke(self, name: str, event: Any, *, request_id: str | None = None) -> InvokeResult:
        """Run the function on ``event`` and wait for its result (RequestResponse).

        Handler failures come back as ``InvokeResult.error``; only caller mistakes
        raise (:class:`FunctionNotFound`, an event that is not JSON-serialisable,
        :class:`TooManyRequests`, :class:`RuntimeStopped`).
        """
        config = self.function(name)
        pool = self._pools[name]
        request_id = request_id or str(uuid.uuid4())
        event_json = json.dumps(event)
        worker = pool.acquire(self._acquire_timeout_s)
        cold = worker is None
        init_ms: float | None = None
        if worker is None:
            try:
                worker = _Worker(config, self.worker_env(config), self._cwd, self._emit)
            except BaseException:
                pool.unreserve()
                raise
            pool.register(worker)
        keep = False
        try:
            if cold:
                init_ms, init_error = self._init(worker, request_id)
                if init_error is not None:
                    return InvokeResult(request_id, None, init_error, 0.0, True, init_ms)
            result, keep = self._run(worker, request_id, event_json, cold, init_ms)
            return result
        finally:
            pool.release(worker, keep=keep)

    def _init(self, worker: _Worker, request_id: str) -> tuple[float | None, dict[str, Any] | None]:
        """Wait for the worker's init; return its duration or Lambda's error for it."""
        config = worker.config
        limit = max(INIT_TIMEOUT_S, config.timeout_s)
        started = time.monotonic()
        try:
            message = worker.read_message(started + limit)
        except _Timeout:
            worker.kill()
            self._platform(config, f"{_now_iso()} {request_id} Init timed out after {limit:.2f} s")
            text = f"RequestId: {request_id} Error: Task timed out after {limit:.2f} seconds"
            return None, _lambda_error("Sandbox.Timedout", text, request_id)
        if message is None:
            worker.kill()
            text = f"RequestId: {request_id} Error: {_exit_text(worker.reap(2.0))}"
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
        worker: _Worker,
        request_id: str,
        event_json: str,
        cold: bool,
        init_ms: float | None,
    ) -> tuple[InvokeResult, bool]:
        """One invocation on a ready worker; the bool says whether to keep it warm."""
        config = worker.config
        worker.request_id = request_id
        self._platform(config, f"START RequestId: {request_id} Version: $LATEST")
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
        except _Timeout:
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
            text = _exit_text(worker.reap(2.0))
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
        # A broken sink must not break invocations.
        with self._sink_lock, contextlib.suppress(Exception):
            self._sink(line)

    def _platform(self, config: FunctionConfig, text: str) -> None:
        if self._platform_logs:
            self._emit(f"[{config.name}] {text}")

    def _report(self, worker: _Worker, result: InvokeResult, status: str | None) -> None:
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
        for pool in self._pools.values():
            pool.stop(timeout)

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

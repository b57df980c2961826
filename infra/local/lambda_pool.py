"""Worker processes of the local Lambda runtime and the per-function pool that caps them.

A :class:`Worker` is one execution environment (a process running
:mod:`infra.local.lambda_worker`) with its protocol pipes and log readers; a
:class:`Pool` holds a function's warm workers, at most ``max_concurrency``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from infra.local.lambda_types import FunctionConfig, RuntimeStopped, TooManyRequests
from infra.local.lambda_worker import INIT_DONE

WORKER_MODULE = "infra.local.lambda_worker"

_SIGNAL_TEXT = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
}


class WorkerTimeout(Exception):
    """A worker did not answer before its deadline."""


def exit_text(returncode: int | None) -> str:
    """Lambda's ``Runtime.ExitError`` message for a worker's exit status."""
    if returncode is None:
        return "Runtime exited without providing a reason"
    if returncode < 0:
        sig = signal.Signals(-returncode)
        return f"Runtime exited with error: signal: {_SIGNAL_TEXT.get(sig, sig.name)}"
    return f"Runtime exited with error: exit status {returncode}"


class Worker:
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
        #: The version this environment runs (Lambda's ``AWS_LAMBDA_FUNCTION_VERSION``).
        self.env_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
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
        """The next JSON line from the worker; None at EOF; ``WorkerTimeout`` past the deadline."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                message: dict[str, Any] = json.loads(line)
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout
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
                raise WorkerTimeout
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
        initialised = False  # until the worker's marker: init output, no request to tag
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line == INIT_DONE:
                    initialised = True
                    continue
                request_id = self.request_id if initialised else None
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


def init_parallelism() -> int:
    """How many workers of one function may run their init at once: one per core, at least 2.

    A cold start is CPU-bound (the handler's imports, then its priming hooks). Ten of them
    at once on a two-core machine did not take five times one: they thrashed, and each took
    16 to 20 s instead of 1.2 s, past the init timeout. Lambda starts every sandbox on its
    own host; here the starts of one function take turns instead, and the wait for a turn
    is not part of a worker's init time or its timeout.
    """
    return max(2, os.cpu_count() or 1)


class Pool:
    """The warm workers of one function and the slots that cap its concurrency."""

    def __init__(self, config: FunctionConfig, limit: int, *, starts: int | None = None) -> None:
        self.config = config
        #: At most this many workers alive at once (reserved concurrency, or the default).
        self.limit = limit
        #: At most this many workers in their init at once (:func:`init_parallelism`).
        self.starts = init_parallelism() if starts is None else starts
        if self.starts < 1:
            raise ValueError("starts must be at least 1")
        self._cond = threading.Condition()
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._slots = 0  # workers alive or being started
        self._starting = 0  # workers in their init now
        self._stopped = False

    def acquire(self, wait_s: float) -> Worker | None:
        """A warm idle worker, or None when the caller may start a new one.

        None comes with a slot and a start turn taken: the caller spawns the worker, waits
        for its init, then calls :meth:`started`. While every turn is taken, a caller
        waits, and takes a worker that turns idle meanwhile rather than start another.
        """
        deadline = time.monotonic() + wait_s
        dead: list[Worker] = []
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
                    if self._slots < self.limit and self._starting < self.starts:
                        self._slots += 1
                        self._starting += 1
                        return None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        held = (
                            f"all {self.limit} workers busy"
                            if self._slots >= self.limit
                            else f"{self.starts} workers starting"
                        )
                        raise TooManyRequests(f"{self.config.name}: {held} for {wait_s:.1f} s")
                    self._cond.wait(remaining)
        finally:
            for worker in dead:
                worker.destroy()

    def started(self) -> None:
        """The worker ``acquire`` let the caller start has finished its init (or failed to)."""
        with self._cond:
            self._starting -= 1
            self._cond.notify_all()

    def register(self, worker: Worker) -> None:
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

    def release(self, worker: Worker, *, keep: bool) -> None:
        with self._cond:
            self._busy.discard(worker)
            if keep and not self._stopped:
                self._idle.append(worker)
                self._cond.notify_all()
                return
        self._discard(worker)

    def _discard(self, worker: Worker) -> None:
        worker.destroy()
        self.unreserve()

    def drain(self, timeout: float) -> bool:
        """Wait until no invocation is in flight (a version taken out of the alias)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout=timeout)

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

"""Faults and kills against a running local cloud, from outside its code (the chaos soak).

Nothing here changes how the local cloud works; it acts on it the way an
unlucky day in AWS would:

* :func:`worker_pids` finds the worker processes of one local function (this
  process's children running :mod:`infra.local.lambda_worker`, named by their
  ``AWS_LAMBDA_FUNCTION_NAME``), from ``/proc``;
* :func:`peer_pid` finds which of them holds the other end of a loopback TCP
  connection (``/proc/net/tcp`` inode -> ``/proc/<pid>/fd``), so a model request
  can be traced to the worker that sent it;
* :class:`ModelChaos` sits in front of the in-process fake model's request
  handler (``FakeModelServer.handle``, the public entry point its HTTP layer
  calls) and SIGKILLs the worker that sent a chosen job's model request, either
  **before** the model answers (the call is in flight: budget reserved, nothing
  settled) or **right after** it answered (the documented crash window of the
  call ledger: the provider was paid, the ledger entry is not written yet);
* :func:`inject_faults` makes the fake model answer 429, 500, or time out.

Linux only (``/proc``); every kill is aimed at a pid this process started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.local.fake_model import FakeModelServer, Fault

WORKER_MODULE = "infra.local.lambda_worker"
#: How a soak job marks its input, so its model requests can be traced back to it.
MARKER = re.compile(r"\[soak:([A-Za-z0-9_-]{1,64})\]")

KillPhase = Literal["before_answer", "after_answer"]
FaultKind = Literal["429", "500", "timeout"]


# -- processes ------------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _ppid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    # "pid (comm) state ppid ...": comm may hold spaces or parentheses.
    _, _, rest = stat.rpartition(")")
    parts = rest.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _environ(pid: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in _read(f"/proc/{pid}/environ").split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def worker_pids(function_name: str | None = None, *, parent: int | None = None) -> list[int]:
    """Live local-runtime worker processes (of one function, if named) started by ``parent``."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if _ppid(pid) != parent:
            continue
        if WORKER_MODULE.encode() not in _read(f"/proc/{pid}/cmdline"):
            continue
        if function_name is not None and (
            _environ(pid).get("AWS_LAMBDA_FUNCTION_NAME") != function_name
        ):
            continue
        found.append(pid)
    return sorted(found)


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the loopback TCP sockets whose local port is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table).decode(errors="replace").splitlines()[1:]:
            parts = line.split()
            if len(parts) < 10:
                continue
            local = parts[1]
            if int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def peer_pid(client_port: int, candidates: Iterable[int]) -> int | None:
    """Which of ``candidates`` owns the socket bound to ``client_port`` (None: none of them)."""
    inodes = {f"socket:[{inode}]" for inode in _socket_inodes(client_port)}
    if not inodes:
        return None
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return pid
    return None


def kill_worker(pid: int) -> bool:
    """SIGKILL one worker this process started (its process group, as a timeout would)."""
    if _ppid(pid) != os.getpid() or WORKER_MODULE.encode() not in _read(f"/proc/{pid}/cmdline"):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        return True
    return False


# -- the model --------------------------------------------------------------------------


def inject_faults(fake: FakeModelServer, kind: FaultKind, times: int, *, timeout_s: float) -> None:
    """Make the next ``times`` model requests fail: 429 (with Retry-After), 500, or time out.

    A timeout is a slow success held longer than the caller's per-call timeout
    (``timeout_s``); the fake model records it as ``499`` once the caller left.
    """
    if kind == "429":
        fault = Fault(status=429, retry_after=0.2, times=times, message="soak: rate limited")
    elif kind == "500":
        fault = Fault(status=500, times=times, message="soak: provider error")
    else:
        fault = Fault(status=200, delay_s=timeout_s, times=times, message="soak: slow")
    fake.inject(fault)


def marker_of(raw: bytes) -> str | None:
    """The soak marker in a request body (the job's input), if any."""
    found = MARKER.search(raw.decode("utf-8", errors="replace"))
    return found.group(1) if found else None


@dataclass
class Kill:
    """One kill the chaos carried out."""

    marker: str
    phase: KillPhase
    pid: int
    at: float


@dataclass
class ModelChaos:
    """Kills the worker that sent a chosen job's model request (its first one only).

    ``plan`` maps a job marker to the phase to kill in. Install it on a running
    fake model (:meth:`install`); :meth:`uninstall` restores the server's handler.
    ``candidates`` returns the pids that may have sent the request (the worker
    processes of the local cloud).
    """

    fake: FakeModelServer
    candidates: Callable[[], list[int]] = worker_pids
    plan: dict[str, KillPhase] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    #: Planned kills that found no worker to kill (the request came from elsewhere).
    missed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _original: Callable[..., None] | None = None

    def install(self) -> ModelChaos:
        if self._original is None:
            self._original = self.fake.handle
            self.fake.handle = self._handle  # type: ignore[method-assign]
        return self

    def uninstall(self) -> None:
        if self._original is not None:
            self.fake.handle = self._original  # type: ignore[method-assign]
            self._original = None

    def aim(self, marker: str, phase: KillPhase) -> None:
        with self._lock:
            self.plan[marker] = phase

    def _take(self, raw: bytes) -> tuple[str, KillPhase] | None:
        marker = marker_of(raw)
        if marker is None:
            return None
        with self._lock:
            phase = self.plan.pop(marker, None)
        return (marker, phase) if phase is not None else None

    def _sender(self, http: Any) -> int | None:
        return peer_pid(int(http.client_address[1]), self.candidates())

    def _kill(self, pid: int | None, marker: str, phase: KillPhase) -> bool:
        if pid is None or not kill_worker(pid):
            with self._lock:
                self.missed.append(marker)
            return False
        with self._lock:
            self.kills.append(Kill(marker, phase, pid, time.monotonic()))
        return True

    def _handle(self, http: Any, method: str, path: str, raw: bytes) -> None:
        original = self._original
        assert original is not None
        target = self._take(raw) if method == "POST" and path.endswith("/completions") else None
        if target is None:
            original(http, method, path, raw)
            return
        marker, phase = target
        # Found before answering, so an after-answer kill lands within milliseconds.
        pid = self._sender(http)
        if phase == "before_answer":
            # The call is in flight: the provider never answers it.
            if self._kill(pid, marker, phase):
                http.close_connection = True
                return
            original(http, method, path, raw)
            return
        original(http, method, path, raw)  # answered (and recorded as paid) first
        self._kill(pid, marker, phase)

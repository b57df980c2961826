"""Run independent AWS requests together: one round trip for a whole wave.

The gateway's bookkeeping around a model call is a handful of independent
DynamoDB requests (a reservation per budget scope, a key-bucket take; after the
call a settlement per scope, the ledger entry, ...). Issued one after another
they cost one round trip each; issued together, one round trip in all.

:func:`run_all` runs callables on a process-wide thread pool and waits for all
of them. It cannot deadlock when a callable itself calls :func:`run_all` (budget
scopes inside the gateway's wave) or when more callers wait than the pool has
threads: the waiting caller runs every callable that no thread has started within
a short grace itself ("caller runs"), so it only ever waits on work that is running.

boto3 clients are thread-safe; boto3 *sessions* and resources are not, which is
why the runtime shares clients (``stratus.aws``), never sessions, across threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Threads shared by every wave of the process (a Lambda serves one request at a time;
#: the local cloud and the tests run many in one process, which caller-runs absorbs).
POOL_THREADS = 16
#: How long a waiting caller lets the pool start a callable before it runs it itself: a
#: few threads starting late on a busy machine should not split a wave in two, and a
#: saturated pool (every thread waiting on inner waves) costs at most this per callable.
START_GRACE_S = 0.25

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="stratus-wave")
        return _pool


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one callable of a wave returned or raised."""

    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def _outcome(fn: Callable[[], T]) -> Outcome[T]:
    try:
        return Outcome(value=fn())
    except BaseException as exc:  # reported to the caller, which decides
        return Outcome(error=exc)


def run_all(fns: Sequence[Callable[[], Any]]) -> list[Outcome[Any]]:
    """Run ``fns`` together and wait for every one; their outcomes, in order.

    Nothing is cancelled when one fails: each request of a wave completes, so the
    caller knows exactly what was written (and can undo it).
    """
    if not fns:
        return []
    if len(fns) == 1:
        return [_outcome(fns[0])]
    # Each runs on the pool; one that no thread took within the grace runs here (so the
    # wave stays one round trip on a loaded machine, and nested waves cannot deadlock).
    started = [Started(fn) for fn in fns[1:]]
    return [_outcome(fns[0]), *(s.wait() for s in started)]


class Started(Generic[T]):
    """One callable started on the pool (no thread of its own is started); :meth:`wait`
    for its outcome."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._future: Future[Outcome[T]] = _executor().submit(_outcome, fn)

    def wait(self, timeout: float | None = None) -> Outcome[T]:
        """Its outcome; if no thread has taken it within the grace, it runs here.

        ``timeout`` bounds the wait for a callable that is running on the pool: past it,
        :class:`TimeoutError` (the callable goes on running)."""
        wait([self._future], timeout=START_GRACE_S)
        if self._future.cancel():
            return _outcome(self._fn)
        return self._future.result(timeout)


def values(outcomes: Sequence[Outcome[Any]]) -> list[Any]:
    """Every value, or the first error (in order) raised."""
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    return [outcome.value for outcome in outcomes]

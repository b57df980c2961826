"""A circuit breaker per (endpoint, model) whose state the whole fleet shares.

State is one item in the limits table, ``BREAKER#<endpoint>#<model>``:

* **closed**: no ``opened_until``. Each provider failure (5xx, timeout,
  connection error; not 4xx, not a key's 429) does ``ADD failures 1``; a
  success after failures resets it. At ``breaker_failures`` failures in a row
  the breaker opens: ``opened_until = now + breaker_open_s``.
* **open**: until ``opened_until`` every instance skips the model at once
  (the gateway falls back to the next model of the chain) without a request.
* **half-open**: once ``opened_until`` passed, exactly one caller in the fleet
  wins the probe (a conditional ``SET probe_until``); the others still skip
  it. A successful probe closes the breaker, a failed one opens it again.

**Reads come from a per-process cache** (:class:`StateCache`): :meth:`before`
costs no request while this process's copy of the item is at most
``gateway_state_cache_s`` old (default 2 s). An older copy is still served while
one background refresh (single-flight, a daemon thread) reads the item; a
process without a copy yet reads it in the gateway's pre-call wave (concurrently
with the budget reservation, not a round trip of its own). Writes happen on state
changes only (a failure, opening, the probe claim, the reset after failures), and
what this process writes updates its own copy at once.

**What the staleness lets through.** A breaker opened by *another* process is
seen here up to ``gateway_state_cache_s`` plus one refresh later: until then this
process keeps sending its calls to the failing model (each one failing, counted
and, at the threshold, opening the breaker here too). Likewise a breaker closed
elsewhere keeps being skipped here for up to that long (calls go to the fallback).
A half-open probe stays fleet-wide single: the claim is a conditional write.
``STRATUS_GATEWAY_STATE_CACHE_S=0`` reads the item on every call (one round trip).

The state lives behind :class:`stratus.gateway_stores.ports.BreakerStore`: the
limits table, or (without one: scripts, unit tests) an in-process store.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from stratus.config import Settings
from stratus.gateway_stores.ports import BreakerStore
from stratus.observability import logger
from stratus.task_metrics import breaker_opened

#: How long a probe may take before another caller may probe instead.
PROBE_S = 60.0

V = TypeVar("V")
#: Runs a refresh off the caller's thread (tests pass one that runs it at once).
Spawn = Callable[[Callable[[], None]], None]


_live: set[threading.Thread] = set()
_live_lock = threading.Lock()


def spawn_daemon(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a daemon thread (a frozen or ending Lambda never waits for it)."""

    def run() -> None:
        try:
            fn()
        finally:
            with _live_lock:
                _live.discard(thread)

    thread = threading.Thread(target=run, name="stratus-state-refresh", daemon=True)
    with _live_lock:
        _live.add(thread)
    thread.start()


def wait_for_refreshes(timeout_s: float = 10.0) -> None:
    """Wait for the background refreshes running now (tests and benches, before measuring)."""
    with _live_lock:
        running = list(_live)
    for thread in running:
        thread.join(timeout_s)


class StateCache(Generic[V]):
    """Per-process copies of shared state, refreshed off the critical path.

    :meth:`get` returns a copy and whether it is fresh (at most ``max_age_s`` old);
    :meth:`refresh_async` reads once more in the background, one read per key at a
    time. Each :meth:`put` or :meth:`update` (this process's own writes) bumps the
    key's generation, and a refresh that started before it does not overwrite it.
    """

    def __init__(
        self, max_age_s: float, clock: Callable[[], float], spawn: Spawn | None = None
    ) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._spawn = spawn or spawn_daemon
        self._entries: dict[str, tuple[float, V]] = {}
        self._generation: dict[str, int] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0

    def get(self, key: str) -> tuple[V | None, bool]:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None, False
        read_at, value = entry
        return value, self._clock() - read_at <= self.max_age_s

    def put(self, key: str, value: V, *, generation: int | None = None) -> None:
        """Store ``value`` read now; with ``generation``, only if no write came since."""
        with self._lock:
            current = self._generation.get(key, 0)
            if generation is not None and generation != current:
                return
            self._generation[key] = current + 1
            self._entries[key] = (self._clock(), value)

    def update(self, key: str, change: Callable[[V | None], V]) -> None:
        """Apply this process's own write to its copy (a missing copy stays missing
        unless ``change`` builds one from None)."""
        with self._lock:
            entry = self._entries.get(key)
            self._generation[key] = self._generation.get(key, 0) + 1
            self._entries[key] = (
                entry[0] if entry else self._clock(),
                change(entry[1] if entry else None),
            )

    def fill(self, key: str, read: Callable[[], V]) -> V:
        """Read now (the caller's thread) and keep the copy."""
        with self._lock:
            generation = self._generation.get(key, 0)
        value = read()
        self.put(key, value, generation=generation)
        return value

    def refresh_async(self, key: str, read: Callable[[], V]) -> bool:
        """Start one background read of ``key`` unless one runs; True if started."""
        with self._lock:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
            generation = self._generation.get(key, 0)

        def refresh() -> None:
            try:
                self.put(key, read(), generation=generation)
            except Exception:  # the stale copy stays; the next stale read tries again
                logger.exception("shared gateway state could not be refreshed", extra={"key": key})
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        try:
            self._spawn(refresh)
        except Exception:
            with self._lock:
                self._refreshing.discard(key)
            logger.exception("shared gateway state refresh could not start")
            return False
        return True

    def refreshing(self, key: str) -> bool:
        with self._lock:
            return key in self._refreshing


@dataclass(frozen=True)
class Admission:
    allowed: bool
    probe: bool = False
    failures: int = 0
    state: str = "closed"

    @property
    def needs_reset(self) -> bool:
        """A success after this admission must write (close the breaker, reset failures)."""
        return self.probe or self.failures > 0


class CircuitBreaker:
    def __init__(
        self,
        settings: Settings,
        store: BreakerStore,
        *,
        clock: Callable[[], float] = time.time,
        spawn: Spawn | None = None,
    ) -> None:
        self._store = store
        self._threshold = settings.breaker_failures
        self._open_s = settings.breaker_open_s
        self._clock = clock
        self._cache: StateCache[dict[str, Any]] = StateCache(
            settings.gateway_state_cache_s, clock, spawn
        )

    @staticmethod
    def _pk(endpoint: str, model: str) -> str:
        return f"BREAKER#{endpoint}#{model}"

    def state(self, endpoint: str, model: str) -> dict[str, Any]:
        """The item as stored now (uncached: for tests, reports, operators)."""
        return self._store.read(self._pk(endpoint, model))

    def _reader(self, pk: str) -> Callable[[], dict[str, Any]]:
        return lambda: dict(self._store.read(pk))

    def warm(self, endpoint: str, models: Sequence[str]) -> list[Callable[[], Any]]:
        """The reads a call's pre-call wave should make: the models with no cached copy
        yet. Stale copies are refreshed in the background from here (off the path)."""
        if not self._cache.enabled:
            return []
        reads: list[Callable[[], Any]] = []
        for model in dict.fromkeys(models):
            pk = self._pk(endpoint, model)
            item, fresh = self._cache.get(pk)
            if item is None:
                reads.append(functools.partial(self._cache.fill, pk, self._reader(pk)))
            elif not fresh:
                self._cache.refresh_async(pk, self._reader(pk))
        return reads

    def _item(self, pk: str) -> dict[str, Any]:
        if not self._cache.enabled:
            return self._store.read(pk)
        item, fresh = self._cache.get(pk)
        if item is None:
            return self._cache.fill(pk, self._reader(pk))
        if not fresh and self._cache.refresh_async(pk, self._reader(pk)):
            item = self._cache.get(pk)[0] or item  # the refresh may be done already
        return dict(item)

    def before(self, endpoint: str, model: str) -> Admission:
        now = self._clock()
        pk = self._pk(endpoint, model)
        item = self._item(pk)
        failures = int(item.get("failures", 0))
        opened_until = item.get("opened_until")
        if opened_until is None:
            return Admission(allowed=True, failures=failures)
        if now < float(opened_until):
            return Admission(allowed=False, failures=failures, state="open")
        probe_until = item.get("probe_until")
        if probe_until is not None and now < float(probe_until):
            # A probe known to run (this process's, or seen in the item): skip, no write.
            return Admission(allowed=False, failures=failures, state="half_open")
        # Half-open: one probe for the whole fleet.
        probe = now + PROBE_S
        if self._store.claim_probe(pk, opened_until, now, probe):
            self._cache.update(pk, lambda old: {**(old or item), "probe_until": probe})
            return Admission(allowed=True, probe=True, failures=failures, state="half_open")
        if self._cache.enabled:  # another caller probes (or re-opened it): learn which
            self._safely(self._cache.fill, pk, self._reader(pk))
        return Admission(allowed=False, failures=failures, state="half_open")

    def success(self, endpoint: str, model: str, admission: Admission) -> None:
        if not admission.needs_reset:
            return  # the common case costs no write
        if admission.probe:
            logger.info("circuit closed", extra={"endpoint": endpoint, "model": model})
        pk = self._pk(endpoint, model)
        self._cache.update(pk, lambda old: {"failures": 0})
        self._safely(self._store.reset, pk)

    def failure(self, endpoint: str, model: str, admission: Admission) -> bool:
        """Count a failure; True if the breaker is (now) open."""
        pk = self._pk(endpoint, model)
        until = self._clock() + self._open_s
        if admission.probe:
            self._open(pk, until)
            logger.warning("circuit re-opened", extra={"endpoint": endpoint, "model": model})
            return True
        failures = int(self._safely(self._store.add_failure, pk) or 0)
        if failures:
            self._cache.update(pk, lambda old: {**(old or {}), "failures": failures})
        if failures >= self._threshold:
            self._open(pk, until)
            logger.warning(
                "circuit opened",
                extra={"endpoint": endpoint, "model": model, "failures": failures},
            )
            return True
        return False

    def _open(self, pk: str, until: float) -> None:
        def opened(old: dict[str, Any] | None) -> dict[str, Any]:
            item = {k: v for k, v in (old or {}).items() if k != "probe_until"}
            return {**item, "opened_until": until}

        breaker_opened(pk.rsplit("#", 1)[-1])  # BreakerOpens (stratus.task_metrics)
        self._cache.update(pk, opened)  # honoured here at once, even if the write fails
        self._safely(self._store.open_until, pk, until)

    @staticmethod
    def _safely(write: Callable[..., Any], *args: Any) -> Any:
        """A state write that must not fail the model call (the state is advisory)."""
        try:
            return write(*args)
        except Exception:
            logger.exception("circuit breaker state could not be written")
            return None

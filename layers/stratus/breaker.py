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

The state lives behind :class:`stratus.gateway_stores.ports.BreakerStore`: the
limits table, or (without one: scripts, unit tests) an in-process store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stratus.config import Settings
from stratus.gateway_stores.ports import BreakerStore
from stratus.observability import logger

#: How long a probe may take before another caller may probe instead.
PROBE_S = 60.0


@dataclass(frozen=True)
class Admission:
    allowed: bool
    probe: bool = False
    failures: int = 0
    state: str = "closed"


class CircuitBreaker:
    def __init__(
        self,
        settings: Settings,
        store: BreakerStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._threshold = settings.breaker_failures
        self._open_s = settings.breaker_open_s
        self._clock = clock

    @staticmethod
    def _pk(endpoint: str, model: str) -> str:
        return f"BREAKER#{endpoint}#{model}"

    def state(self, endpoint: str, model: str) -> dict[str, Any]:
        return self._store.read(self._pk(endpoint, model))

    def before(self, endpoint: str, model: str) -> Admission:
        now = self._clock()
        item = self.state(endpoint, model)
        failures = int(item.get("failures", 0))
        opened_until = item.get("opened_until")
        if opened_until is None:
            return Admission(allowed=True, failures=failures)
        if now < float(opened_until):
            return Admission(allowed=False, failures=failures, state="open")
        # Half-open: one probe for the whole fleet.
        pk = self._pk(endpoint, model)
        if self._store.claim_probe(pk, opened_until, now, now + PROBE_S):
            return Admission(allowed=True, probe=True, failures=failures, state="half_open")
        return Admission(allowed=False, failures=failures, state="half_open")

    def success(self, endpoint: str, model: str, admission: Admission) -> None:
        if not admission.probe and admission.failures == 0:
            return  # the common case costs no write
        if admission.probe:
            logger.info("circuit closed", extra={"endpoint": endpoint, "model": model})
        self._safely(self._store.reset, self._pk(endpoint, model))

    def failure(self, endpoint: str, model: str, admission: Admission) -> bool:
        """Count a failure; True if the breaker is (now) open."""
        pk = self._pk(endpoint, model)
        until = self._clock() + self._open_s
        if admission.probe:
            self._safely(self._store.open_until, pk, until)
            logger.warning("circuit re-opened", extra={"endpoint": endpoint, "model": model})
            return True
        failures = int(self._safely(self._store.add_failure, pk) or 0)
        if failures >= self._threshold:
            self._safely(self._store.open_until, pk, until)
            logger.warning(
                "circuit opened",
                extra={"endpoint": endpoint, "model": model, "failures": failures},
            )
            return True
        return False

    @staticmethod
    def _safely(write: Callable[..., Any], *args: Any) -> Any:
        """A state write that must not fail the model call (the state is advisory)."""
        try:
            return write(*args)
        except Exception:
            logger.exception("circuit breaker state could not be written")
            return None

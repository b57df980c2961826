"""Fairness between tenants: a request rate per tenant, a cap on its queued jobs.

**The request rate** of a tenant is ``rps`` with bursts of ``burst``: the stage's
defaults (``STRATUS_TENANT_RATE_LIMIT_RPS``/``_BURST``; unset: no limit) or the
tenant's own (``stratus tenant limits --rps N --burst M``, on the tenant's
``LIMITS#<tenant>`` item of the budgets table beside its dollar limits, read through
:meth:`stratus.budgets.BudgetLedger.tenant_overrides`: cached a minute per process).
It is enforced fleet-wide on the limits table with the key buckets' machinery
(:class:`stratus.gateway_stores.ports.BucketStore`): a bucket
``BUCKET#tenant:<tenant>#<window>`` holds ``burst`` requests and refills whole every
``burst / rps`` seconds (at least one second), so the average is ``rps`` and a burst of
``burst`` passes at once; like any fixed window it lets up to ``2 * burst`` through
across a boundary. A take is one conditional ``UpdateItem`` (``ADD requests 1`` if
``requests < burst``), atomic across every Lambda instance. A refusal is
``429 throttled`` with ``details.scope = "tenant"`` and ``Retry-After`` (the window's
end), and this process remembers it until the window ends: a tenant hammering over its
limit is answered from memory, without a DynamoDB request.

**Round trips.** The routes that call a model (invoke, session messages) take inside
the gateway's pre-call wave of the request's first model call (the budget
reservation's wave, :attr:`stratus.budgets.BudgetLedger.admission`): no extra round
trip, so a model call stays at two. Every other authenticated route takes before it
runs: one round trip (one conditional write), and none when this process already knows
the tenant is out for this window. The tenant's overrides are one ``GetItem`` per
tenant per minute per process (shared with its budget limits).

**Queued jobs.** A tenant has at most ``max_queued_jobs`` jobs queued or running (the
stage's ``STRATUS_MAX_QUEUED_JOBS``, or the tenant's own): a counter item in the jobs
table, incremented in the same transaction that creates the job (conditional on the
cap) and decremented in the same transaction that moves it to a final status (see
:mod:`stratus.jobs.store`), so it is exact under concurrency and decremented exactly
once. Over the cap, ``POST /v1/jobs`` answers ``429 too_many_jobs`` (details ``limit``,
``queued``) and an ingest message is retried later (see :mod:`stratus.jobs.ingest`).

Without the limits table (a function not granted it) the request rate is not limited
there: a per-process count would not be a tenant's rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stratus.agents import CallScope
from stratus.config import Settings
from stratus.errors import StratusError
from stratus.gateway_stores.ports import BucketStore

#: The fields of a tenant's ``LIMITS#<tenant>`` item this module reads.
RPS_FIELD = "rate_limit_rps"
BURST_FIELD = "rate_limit_burst"
MAX_QUEUED_FIELD = "max_queued_jobs"
#: Request scopes (of one HTTP request) this process took for already: bounded memory.
MEMO_SIZE = 4096
#: The scope kinds whose first model call takes the tenant's request token.
REQUEST_KINDS = frozenset({"request", "session"})


class TenantThrottled(StratusError):
    """The tenant is over its request rate; ``Retry-After`` says when to come back."""

    code = "throttled"
    status = 429


class TooManyJobs(StratusError):
    """The tenant already has ``max_queued_jobs`` jobs queued or running."""

    code = "too_many_jobs"
    status = 429


@dataclass(frozen=True)
class TenantRate:
    """``rps`` on average, ``burst`` at once: a bucket of ``capacity`` per window."""

    rps: float
    burst: int

    @property
    def window_s(self) -> float:
        return max(1.0, self.burst / self.rps)

    @property
    def capacity(self) -> int:
        return max(self.burst, math.floor(self.rps * self.window_s))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


class TenantLimiter:
    """Per-tenant request rates and queued-job caps (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: BucketStore | None,
        *,
        overrides: Callable[[str], Mapping[str, Any]] = lambda _tenant: {},
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._overrides = overrides
        self.clock = clock
        # tenant -> the end of the window in which the shared bucket refused it.
        self._refused: dict[str, float] = {}
        self._memo: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._store is not None

    # -- limits

    def rate(self, tenant_id: str) -> TenantRate | None:
        """The tenant's request rate (its own, else the stage's); None: not limited."""
        own = self._overrides(tenant_id)
        s = self._settings
        rps = _number(own.get(RPS_FIELD)) or s.tenant_rate_limit_rps
        if rps is None:
            return None
        burst = _number(own.get(BURST_FIELD)) or s.tenant_rate_limit_burst
        return TenantRate(rps=float(rps), burst=max(1, int(burst or math.ceil(rps))))

    def max_queued_jobs(self, tenant_id: str) -> int | None:
        """The tenant's cap on jobs queued or running; None: no cap."""
        own = _number(self._overrides(tenant_id).get(MAX_QUEUED_FIELD))
        return int(own) if own is not None else self._settings.max_queued_jobs

    # -- the request rate

    def check_cached(self, tenant_id: str) -> None:
        """Refuse at once (no request) if this process saw the tenant refused in this window."""
        now = self.clock()
        with self._lock:
            until = self._refused.get(tenant_id, 0.0)
        if until > now:
            raise self._throttled(tenant_id, until - now)

    def take(self, tenant_id: str) -> None:
        """One request of the tenant: one conditional write, or ``429 throttled``."""
        if self._store is None:
            return
        self.check_cached(tenant_id)
        rate = self.rate(tenant_id)
        if rate is None:
            return
        now = self.clock()
        window = int(now // rate.window_s)
        end = (window + 1) * rate.window_s
        taken = self._store.take(
            f"tenant:{tenant_id}",
            window,
            0,
            rpm=rate.capacity,
            tpm=1,
            expires_at=int(end) + 3600,
        )
        if not taken:
            with self._lock:
                for tenant in [t for t, u in self._refused.items() if u <= now]:
                    del self._refused[tenant]
                self._refused[tenant_id] = end
            raise self._throttled(tenant_id, end - now, rate)

    def take_for(self, scope: CallScope | None) -> Callable[[], None] | None:
        """The take of a request's first model call, for the reservation's wave; None for
        jobs, for a request that took already, or without the limits table."""
        if scope is None or self._store is None or scope.kind not in REQUEST_KINDS:
            return None
        key = f"{scope.tenant_id}#{scope.kind}#{scope.scope_id}#{scope.step}"
        with self._lock:
            if key in self._memo:
                return None
            self._memo[key] = None
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        tenant = scope.tenant_id
        return lambda: self.take(tenant)

    def _throttled(
        self, tenant_id: str, wait_s: float, rate: TenantRate | None = None
    ) -> TenantThrottled:
        rate = rate or self.rate(tenant_id)
        details: dict[str, Any] = {"scope": "tenant"}
        if rate is not None:
            details.update({"limit_rps": rate.rps, "burst": rate.burst})
        retry = max(1, math.ceil(wait_s))
        return TenantThrottled(
            f"tenant {tenant_id!r} is over its request rate; retry in {retry} s",
            details=details,
            headers={"Retry-After": str(retry)},
        )


def too_many_jobs(limit: int, queued: int) -> TooManyJobs:
    """``429 too_many_jobs``: the tenant's cap and how many it has queued or running."""
    return TooManyJobs(
        f"this tenant already has {queued} jobs queued or running (the limit is {limit})",
        details={"limit": limit, "queued": queued},
        headers={"Retry-After": "5"},
    )

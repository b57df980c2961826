"""Budgets that hold under concurrency: reserve the worst case, settle the real cost.

Every model call reserves its worst-case cost (an upper bound of its prompt
tokens plus its maximum output tokens, at the uncached input rate) on every
budget scope it belongs to, *before* it runs, and settles to the real cost
after it (or releases everything if it failed).

**Scopes** (one DynamoDB item each, in the budgets table, key ``pk``):

=============== ============================== ===================================
scope           key                            limit
=============== ============================== ===================================
``task``        ``TASK#<tenant>#<kind>#<id>``  ``budget_task_usd`` (request, job,
                                               session turn)
``agent_day``   ``AGENT#<agent>#DAY#<date>``   ``budget_agent_daily_usd``
``tenant_day``  ``TENANT#<t>#DAY#<date>``      the tenant's own, else the default
``tenant_month`` ``TENANT#<t>#MONTH#<month>``  the tenant's own, else the default
``global_day``  ``GLOBAL#DAY#<date>``          ``budget_global_daily_usd``
=============== ============================== ===================================

**The reservation** is one conditional ``UpdateItem`` per scope, all issued
together (one round trip, :func:`stratus.fanout.run_all`): ``ADD committed :r`` if
``committed <= limit - r`` (nano-USD integers; ``limit - r`` is computed by the
caller). ``committed`` is settled spend plus open reservations. A conditional write
on one item is atomic, so concurrent callers are serialised on the item and
``committed`` never exceeds the limit; since every reservation is an upper bound of
its call's cost, settled spend never exceeds it either (a low estimate would overrun
by less than one reservation). If a scope refuses, the scopes that accepted are
released again (one more wave, on the refusal path only) and the refusal of the
first refusing scope in the order above is raised; meanwhile a concurrent caller
may be refused although it would have fitted: conservative, never an overspend.

Why not one ``TransactWriteItems`` across the scopes: it would be all-or-nothing,
but DynamoDB *rejects* (``TransactionConflict``) rather than queues concurrent
transactions on the same item, so 50 callers on one tenant's day item would
mostly fail with conflicts and need retry loops, at twice the write capacity;
plain conditional updates serialise on the item: the property the bound needs.

**Settlement and usage** is one round trip too: every scope's settlement at once,
each write also adding the call's usage counters (calls, tokens, cost, hits; see
:data:`stratus.gateway_stores.ports.USAGE_PREFIX`) to the breakdown its item
carries: per agent on the tenant's day and month items, per model on the agent's
day item. A carrier with no limit (no reservation on it) gets an unconditional
``ADD`` in the same wave, so usage is recorded whatever limits are configured;
:class:`stratus.rollups.UsageRollups` reads it from there. Replays and cache hits
(:meth:`BudgetLedger.record_unpaid`) add their counters to the carriers, one wave.

**Thresholds** alert once each per period (:mod:`stratus.budget_alerts`).

**Reservations cannot leak.** The reservation's write also records it on the item
as an open entry (no extra round trip), held until the caller's deadline plus
``budget_hold_margin_s``; settling or releasing removes the entry in its one write,
if it is still there. An entry left by a dead call (timeout, OOM) or a failed
settlement (logged; the entry stays) is given back after its expiry **on read** (a
refusal returns the item for free: its expired entries are released and the
reservation is tried once more) and **by sweep** (:meth:`BudgetLedger.sweep_expired`,
items read by key, no scan). A settlement after its entry was given back records
its real cost on its own: counted once, never given back twice. A dead call's or
failed settlement's cost is missing from ``spent`` (and from the usage that item
carries; a job's or session's total keeps it): the worst case is a reservation
held until its expiry, never for the period. Entries per item are bounded (see
:mod:`stratus.gateway_stores.ports`).

**A job's cap** (``CallScope.max_cost_usd``) is the limit of the job's task scope
when lower than ``budget_task_usd``: every step reserves against it first, so
parallel steps cannot overshoot it; a refusal there is ``402 job_budget_exceeded``
(no operator alerts for a job's own cap).

The items live behind :class:`stratus.gateway_stores.ports.BudgetStore` and the
alerts go out through an :class:`~stratus.gateway_stores.ports.AlertPublisher`
(SNS in the stack); without a store (no budgets table) budgets are off.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from stratus.agents import CallScope
from stratus.budget_alerts import ThresholdAlerts
from stratus.budget_scopes import (
    NANO,
    TASK_TTL,
    BudgetScope,
    TenantLimits,
    agent_day_key,
    call_scopes,
    carriers,
    from_nano,
    task_key,
    tenant_day_key,
    tenant_month_key,
    to_nano,
    usage_counts,
)
from stratus.budget_scopes import decimal_or as _decimal
from stratus.budget_scopes import exceeded as _exceeded
from stratus.budget_scopes import periods as _periods
from stratus.config import Settings
from stratus.deadline import Deadline
from stratus.errors import BudgetExceeded, JobAlreadyFinished, JobBudgetExceeded
from stratus.fanout import Outcome, run_all
from stratus.gateway_stores.memory import MemoryBudgetStore
from stratus.gateway_stores.ports import (
    AlertPublisher,
    BudgetItem,
    BudgetStore,
    OpenReservation,
    UsageAdd,
)
from stratus.observability import logger
from stratus.usage import Usage

__all__ = [
    "NANO",
    "BudgetLedger",
    "BudgetScope",
    "Reservation",
    "SweepReport",
    "TenantLimits",
    "from_nano",
    "task_key",
    "to_nano",
]

LIMITS_CACHE_S = 60.0
#: How long this process keeps a request's own cap (a request lasts at most 15 minutes).
LOCAL_CAP_KEEP_S = 3600.0

#: Usage to add on one item (``member`` and counters) and the expiry of a new item.
_Carried = dict[str, tuple[UsageAdd, int]]


@dataclass
class Reservation:
    amount: Decimal
    #: The id of its open entry on every scope's item.
    rid: str = ""
    #: Epoch seconds: held until then, given back if still open after.
    expires_at: int = 0
    scopes: list[BudgetScope] = field(default_factory=list)
    #: The highest percentage of any scope's limit committed after reserving.
    utilisation: float = 0.0
    settled: bool = False


@dataclass(frozen=True)
class SweepReport:
    #: Budget items read (those that exist).
    checked: int = 0
    #: Expired entries given back, and their amount.
    released: int = 0
    released_usd: Decimal = Decimal(0)


class BudgetLedger:
    """Reservations and settlements on the budget store; a no-op without one."""

    #: scope -> the tenant's request take for the reservation's wave, or None
    #: (:meth:`stratus.tenant_limits.TenantLimiter.take_for`; the composition root sets it).
    admission: Callable[[CallScope | None], Callable[[], None] | None] | None = None

    def __init__(
        self,
        settings: Settings,
        store: BudgetStore | None,
        *,
        alerts: AlertPublisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._thresholds = ThresholdAlerts(settings, store, alerts)
        self._clock = clock
        self._limits: dict[str, tuple[float, TenantLimits]] = {}
        self._raw: dict[str, Mapping[str, Any]] = {}
        # A synchronous request's own cap (``budget_task_usd``) lives in this process: one
        # invocation serves the request, so the table would only add two writes per call.
        self._local = MemoryBudgetStore()
        self._local_seen: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._store is not None

    @property
    def _items(self) -> BudgetStore:
        if self._store is None:
            raise RuntimeError("budgets are off: no budget store")
        return self._store

    # -- limits

    def tenant_limits(self, tenant_id: str) -> TenantLimits:
        """The tenant's own limits (cached a minute), else the configured defaults."""
        now = self._clock()
        with self._lock:
            cached = self._limits.get(tenant_id)
        if cached and now - cached[0] < LIMITS_CACHE_S:
            return cached[1]
        raw = self._items.tenant_limits(tenant_id)
        limits = TenantLimits(
            daily_usd=_decimal(raw.get("daily_usd"), self._settings.budget_tenant_daily_usd),
            monthly_usd=_decimal(raw.get("monthly_usd"), self._settings.budget_tenant_monthly_usd),
        )
        with self._lock:
            self._limits[tenant_id] = (now, limits)
            self._raw[tenant_id] = raw
        return limits

    def tenant_overrides(self, tenant_id: str) -> Mapping[str, Any]:
        """The tenant's ``LIMITS#`` item as stored (rates, caps: :mod:`stratus.tenant_limits`)."""
        if self._store is None:
            return {}
        self.tenant_limits(tenant_id)
        with self._lock:
            return self._raw.get(tenant_id, {})

    def set_tenant_limits(
        self,
        tenant_id: str,
        *,
        daily_usd: Decimal | None,
        monthly_usd: Decimal | None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the given limits (a None leaves that limit as it was); ``extra``: the
        tenant's other limits (request rate, queued jobs: :mod:`stratus.tenant_limits`)."""
        self._items.set_tenant_limits(
            tenant_id, {"daily_usd": daily_usd, "monthly_usd": monthly_usd, **(extra or {})}
        )
        with self._lock:
            self._limits.pop(tenant_id, None)

    def scopes(self, scope: CallScope | None, agent: str) -> list[BudgetScope]:
        """The budget scopes of a call, in reservation order, with their limits."""
        s = self._settings
        return call_scopes(
            datetime.fromtimestamp(self._clock(), tz=UTC),
            scope,
            agent,
            task_usd=s.budget_task_usd,
            agent_daily_usd=s.budget_agent_daily_usd,
            tenant=self.tenant_limits(scope.tenant_id) if scope is not None else None,
            global_daily_usd=s.budget_global_daily_usd,
        )

    # -- reserve, settle, release

    def reserve(
        self,
        scope: CallScope | None,
        agent: str,
        amount: Decimal,
        *,
        deadline: Deadline | None = None,
    ) -> Reservation:
        """Reserve ``amount`` on every scope, held until ``deadline`` plus the margin, or
        raise ``BudgetExceeded`` (``JobBudgetExceeded`` at a job's cap) holding nothing."""
        now = self._clock()
        reservation = Reservation(
            amount=amount, rid=uuid.uuid4().hex[:16], expires_at=self._hold_until(now, deadline)
        )
        # A request's first call takes its tenant's request token in this same wave.
        admit = self.admission(scope) if self.admission is not None else None
        if self._store is None:
            if admit is not None:
                admit()
            return reservation
        budgets = self.scopes(scope, agent)
        calls: list[Callable[[], Any]] = [
            partial(self._reserve_on, b, reservation, now) for b in budgets
        ]
        outcomes = run_all(calls + ([admit] if admit is not None else []))
        admitted = outcomes.pop() if admit is not None else None
        refused: tuple[BudgetScope, Outcome[int | BudgetItem]] | None = None
        for budget, outcome in zip(budgets, outcomes, strict=True):
            if outcome.ok and not isinstance(outcome.value, BudgetItem):
                reservation.scopes.append(budget)
                if budget.limit > 0:
                    committed = from_nano(outcome.value)
                    reservation.utilisation = max(
                        reservation.utilisation, float(committed / budget.limit * 100)
                    )
            elif refused is None:  # the first in scope order: what the caller is told
                refused = (budget, outcome)
        if refused is None:
            if admitted is not None and admitted.error is not None:
                self.release(reservation)  # 429 throttled (the refusal path only)
                raise admitted.error
            return reservation
        budget, outcome = refused
        if outcome.error is not None:
            self.release(reservation)
            raise outcome.error
        item = outcome.get()
        assert isinstance(item, BudgetItem)
        # Give back what the other scopes accepted and build the refusal (which may set
        # the 100% alert marker) together: one wave.
        _, refusal = run_all(
            [
                partial(self.release, reservation),
                partial(self._refused, budget, item, scope, agent, now),
            ]
        )
        raise refusal.get()

    def _hold_until(self, now: float, deadline: Deadline | None) -> int:
        s = self._settings
        left = deadline.remaining_s() if deadline is not None else math.inf
        hold = min(max(left, 0.0), s.budget_max_hold_s)
        return math.floor(now + hold + s.budget_hold_margin_s) + 1

    def _reserve_on(self, budget: BudgetScope, held: Reservation, now: float) -> int | BudgetItem:
        """One conditional write; refused with expired entries: give them back, once more."""
        amount, limit = to_nano(held.amount), to_nano(budget.limit)
        if limit - amount < 0:
            return BudgetItem()  # can never fit: no request
        outcome: int | BudgetItem = BudgetItem()
        for attempt in range(2):
            outcome = self._on(budget).reserve(
                budget.key,
                held.rid,
                amount,
                room=limit - amount,
                limit=limit,
                expires_at=budget.expires_at,
                hold_until=held.expires_at,
                max_open=self._settings.budget_max_open_reservations,
            )
            if not isinstance(outcome, BudgetItem) or attempt or outcome.closed:
                break
            expired = [e for e in outcome.open if e.expires_at < now]
            if not expired:
                break
            self._give_back(budget.key, expired, self._on(budget))
        return outcome

    def _on(self, budget: BudgetScope) -> BudgetStore:
        """The store of a scope: the table, or this process for a request's own cap."""
        if not budget.local:
            return self._items
        now = self._clock()
        with self._lock:
            if budget.key not in self._local_seen:
                self._local_seen[budget.key] = now
                while self._local_seen:
                    oldest, seen = next(iter(self._local_seen.items()))
                    if now - seen < LOCAL_CAP_KEEP_S:
                        break
                    del self._local_seen[oldest]
                    self._local.forget(oldest)
        return self._local

    def _give_back(
        self, key: str, expired: list[OpenReservation], store: BudgetStore | None = None
    ) -> list[OpenReservation]:
        released = (store or self._items).give_back(key, expired)
        if released:
            logger.warning(
                "expired budget reservations given back",
                extra={
                    "budget": key,
                    "released": len(released),
                    "released_usd": str(from_nano(sum(e.amount for e in released))),
                },
            )
        return released

    def _refused(
        self,
        budget: BudgetScope,
        item: BudgetItem,
        scope: CallScope | None,
        agent: str,
        now: float,
    ) -> BudgetExceeded | JobBudgetExceeded | JobAlreadyFinished:
        details = {"scope": budget.name, "limit_usd": str(budget.limit)}
        if item.closed and scope is not None:  # a stale attempt of a finished job
            return JobAlreadyFinished(f"job {scope.scope_id} has finished; it spends no more")
        if len(item.open) >= self._settings.budget_max_open_reservations:
            return BudgetExceeded(
                f"the {budget.name.replace('_', ' ')} budget has too many calls in flight",
                details={**details, "reason": "too_many_open_reservations"},
                headers={"Retry-After": "1"},
            )
        if budget.job_cap and scope is not None:
            return JobBudgetExceeded(
                f"job {scope.scope_id} has no room for this step under its cap of "
                f"${budget.limit} (${from_nano(item.spent)} spent)",
                details={
                    "max_cost_usd": float(budget.limit),
                    "cost_usd": float(from_nano(item.spent)),
                    "step": scope.step,
                },
            )
        self._thresholds.exhausted(budget, scope, agent)
        return _exceeded(budget, now)

    def release(self, reservation: Reservation) -> None:
        """Give a whole reservation back (the call failed or never ran): one wave."""
        self._close(reservation, Decimal(0), {})

    def settle(
        self,
        reservation: Reservation,
        actual: Decimal,
        *,
        scope: CallScope | None,
        agent: str,
        model: str,
        usage: Usage,
    ) -> None:
        """Replace the reservation by the real cost and add the call's usage to the items
        that carry it, in one wave; send the threshold alerts it crosses."""
        counts = usage_counts(usage=usage, cost=actual)
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        carried = carriers(now, reservation.scopes, scope, agent=agent, model=model, counts=counts)
        for budget, spent in self._close(reservation, actual, carried):
            self._thresholds.settled(budget, spent, actual, scope, agent)

    def record_unpaid(
        self,
        *,
        scope: CallScope | None,
        agent: str,
        model: str,
        ledger_hit: bool = False,
        cache_hit: bool = False,
        saved: Decimal = Decimal(0),
    ) -> None:
        """Count an answer the provider did not serve (a replay, a cache hit) on the items
        that carry usage: one wave of unconditional adds, nothing reserved or spent."""
        if self._store is None:
            return
        counts = usage_counts(ledger_hit=ledger_hit, cache_hit=cache_hit, saved=saved)
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        carried = carriers(now, [], scope, agent=agent, model=model, counts=counts)
        run_all([partial(self._add_usage, key, add, exp) for key, (add, exp) in carried.items()])

    def _close(
        self, reservation: Reservation, actual: Decimal, carried: _Carried
    ) -> list[tuple[BudgetScope, Decimal]]:
        """Settle (or release) every scope and add the usage of carriers that hold no
        reservation, all in one wave; each settled scope with its new ``spent``."""
        if reservation.settled or self._store is None:
            return []
        reservation.settled = True
        carried = dict(carried)
        wave: list[Callable[[], object]] = [
            partial(self._settle_on, budget, reservation, actual, carried.pop(budget.key, None))
            for budget in reservation.scopes
        ]
        wave += [partial(self._add_usage, key, add, exp) for key, (add, exp) in carried.items()]
        settled = run_all(wave)[: len(reservation.scopes)]
        return [
            (budget, outcome.value)
            for budget, outcome in zip(reservation.scopes, settled, strict=True)
            if outcome.value is not None
        ]

    def _settle_on(
        self,
        budget: BudgetScope,
        reservation: Reservation,
        actual: Decimal,
        carried: tuple[UsageAdd, int] | None,
    ) -> Decimal | None:
        """One scope's settlement (with the usage it carries); its new ``spent``, or None
        (nothing to report: released, or the write failed and was logged)."""
        reserved, cost = to_nano(reservation.amount), to_nano(actual)
        calls = 1 if cost > 0 else 0
        usage = carried[0] if carried else None
        log = {"budget": budget.key, "reservation": reservation.rid, "cost_usd": str(actual)}
        try:
            store = self._on(budget)
            spent = store.settle(
                budget.key,
                reservation.rid,
                reserved=reserved,
                actual=cost,
                calls=calls,
                usage=usage,
            )
            if spent is None:  # given back already (it outlived its expiry)
                if not cost and usage is None:
                    return None
                spent = store.record_late(budget.key, cost, calls, usage=usage)
                if cost:
                    logger.warning("budget settled after its reservation was given back", extra=log)
        except Exception:
            # The entry stays open and is given back at its expiry, not at period end.
            logger.exception(
                "budget settlement failed; the reservation is held until it expires",
                extra={**log, "held_until": reservation.expires_at},
            )
            return None
        return from_nano(spent)

    def _add_usage(self, key: str, usage: UsageAdd, expires_at: int) -> None:
        try:
            self._items.add_usage(key, usage, expires_at=expires_at)
        except Exception:  # bookkeeping never fails a paid call
            logger.exception("usage could not be recorded", extra={"budget": key})

    def usage(self, key: str) -> dict[str, dict[str, int]]:
        """The usage breakdown an item carries (member -> counters; ``{}`` if none)."""
        if self._store is None:
            return {}
        item = self._store.read([key]).get(key)
        return {m: dict(c) for m, c in item.usage.items()} if item is not None else {}

    # -- give-back by sweep

    def sweep_expired(
        self,
        *,
        tenant_ids: Iterable[str] = (),
        agents: Iterable[str] = (),
        keys: Iterable[str] = (),
    ) -> SweepReport:
        """Give back the expired entries on the current periods' items of these tenants
        and agents (and the global day), and on ``keys``: one ``BatchGetItem`` per 100
        items and one write per item with expired entries; no scan."""
        if self._store is None:
            return SweepReport()
        now = self._clock()
        wanted = [*self.period_keys(tenant_ids, agents, now), *keys]
        items = self._store.read(wanted)
        released: list[OpenReservation] = []
        for key, item in items.items():
            expired = [e for e in item.open if e.expires_at < now]
            if expired:
                released.extend(self._give_back(key, expired))
        amount = from_nano(sum(e.amount for e in released))
        return SweepReport(checked=len(items), released=len(released), released_usd=amount)

    def close_task(self, scope: CallScope) -> SweepReport:
        """Give back every entry still open on a finished unit's task item (a job): they
        belong to attempts that died; a step still settling after this records its cost
        late, once."""
        if self._store is None:
            return SweepReport()
        key, now = task_key(scope), self._clock()
        # Closed first, in the write that reads what is open: an attempt that reserves
        # after this is refused, so nothing can be left open on a finished job's item.
        item = self._store.close(key, now=int(now), expires_at=int(now + TASK_TTL.total_seconds()))
        released = self._give_back(key, list(item.open)) if item.open else []
        amount = from_nano(sum(e.amount for e in released))
        return SweepReport(checked=1, released=len(released), released_usd=amount)

    def period_keys(
        self, tenant_ids: Iterable[str], agents: Iterable[str], now: float | None = None
    ) -> list[str]:
        """The period items of tenants and agents now and one longest hold ago (an entry
        made just before midnight stays on the day that ended)."""
        now = self._clock() if now is None else now
        back = now - self._settings.budget_max_hold_s - self._settings.budget_hold_margin_s
        tenants, names = list(tenant_ids), list(agents)
        keys: list[str] = []
        for at in (now, back):
            day, month, _, _ = _periods(datetime.fromtimestamp(at, tz=UTC))
            for tenant in tenants:
                keys += [tenant_day_key(tenant, day), tenant_month_key(tenant, month)]
            keys += [agent_day_key(agent, day) for agent in names]
            keys.append(f"GLOBAL#DAY#{day}")
        return list(dict.fromkeys(keys))

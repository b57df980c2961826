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

**The reservation** is one conditional ``UpdateItem`` per scope, in that fixed
order: ``ADD committed :r`` if ``committed <= limit - r`` (nano-USD integers;
``limit - r`` is computed by the caller). ``committed`` is settled spend plus open
reservations. A conditional write on one item is atomic, so concurrent callers
are serialised on the item and ``committed`` never exceeds the limit; since every
reservation is an upper bound of its call's cost, settled spend never exceeds it
either (a low estimate would overrun by less than one reservation). If a later
scope refuses, the earlier ones are released again; meanwhile a concurrent caller
may be refused although it would have fitted: conservative, never an overspend.

Why not one ``TransactWriteItems`` across the scopes: it would be all-or-nothing,
but DynamoDB *rejects* (``TransactionConflict``) rather than queues concurrent
transactions on the same item, so 50 callers on one tenant's day item would
mostly fail with conflicts and need retry loops, at twice the write capacity;
plain conditional updates serialise on the item: the property the bound needs.

**Thresholds.** Settlement is an atomic ``ADD spent :cost`` that returns the new
total, so exactly one call sees each threshold crossed (``before < t <= after``)
and sends its one alert per threshold per period, with no marker item. The 100%
alert comes either from spend reaching the limit or from the first refusal at
it, so it takes a conditional marker on the item to be sent once.

**Reservations cannot leak.** The reservation's write also records it on the item
as an open entry (no extra round trip), held until the caller's deadline plus
``budget_hold_margin_s``; settling or releasing removes the entry in its one write,
if it is still there. An entry left by a dead call (timeout, OOM) or a failed
settlement (logged; the entry stays) is given back after its expiry **on read** (a
refusal returns the item for free: its expired entries are released and the
reservation is tried once more) and **by sweep** (:meth:`BudgetLedger.sweep_expired`,
items read by key, no scan). A settlement after its entry was given back records
its real cost on its own: counted once, never given back twice. A dead call's or
failed settlement's cost is missing from ``spent`` (the usage rollups keep what was
recorded): the worst case is a reservation held until its expiry, never for the
period. Entries per item are bounded (see :mod:`stratus.gateway_stores.ports`).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from stratus.agents import CallScope
from stratus.budget_scopes import (
    DAY_TTL,
    MONTH_TTL,
    NANO,
    TASK_TTL,
    BudgetScope,
    TenantLimits,
    from_nano,
    iso,
    task_key,
    to_nano,
)
from stratus.budget_scopes import decimal_or as _decimal
from stratus.budget_scopes import exceeded as _exceeded
from stratus.budget_scopes import periods as _periods
from stratus.config import Settings
from stratus.deadline import Deadline
from stratus.errors import BudgetExceeded, JobBudgetExceeded
from stratus.gateway_stores.ports import AlertPublisher, BudgetItem, BudgetStore, OpenReservation
from stratus.observability import NAMESPACE, SERVICE, logger

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
        self._alerts = alerts
        self._clock = clock
        self._limits: dict[str, tuple[float, TenantLimits]] = {}
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
        return limits

    def set_tenant_limits(
        self, tenant_id: str, *, daily_usd: Decimal | None, monthly_usd: Decimal | None
    ) -> None:
        """Set the given limits (a None leaves that limit as it was)."""
        self._items.set_tenant_limits(
            tenant_id, {"daily_usd": daily_usd, "monthly_usd": monthly_usd}
        )
        with self._lock:
            self._limits.pop(tenant_id, None)

    def scopes(self, scope: CallScope | None, agent: str) -> list[BudgetScope]:
        """The budget scopes of a call, in reservation order, with their limits."""
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        day, month, next_day, next_month = _periods(now)
        day_exp = int((next_day + DAY_TTL).timestamp())
        month_exp = int((next_month + MONTH_TTL).timestamp())
        s = self._settings
        found: list[BudgetScope] = []
        caps = [
            c for c in (s.budget_task_usd, scope.max_cost_usd if scope else None) if c is not None
        ]
        if scope is not None and caps:
            job_cap = scope.max_cost_usd is not None and scope.max_cost_usd == min(caps)
            found.append(
                BudgetScope(
                    "task",
                    task_key(scope),
                    min(caps),
                    None,
                    int((now + TASK_TTL).timestamp()),
                    job_cap=job_cap,
                )
            )
        if s.budget_agent_daily_usd is not None:
            found.append(
                BudgetScope(
                    "agent_day",
                    f"AGENT#{agent}#DAY#{day}",
                    s.budget_agent_daily_usd,
                    next_day,
                    day_exp,
                )
            )
        if scope is not None:
            limits = self.tenant_limits(scope.tenant_id)
            tenant = scope.tenant_id
            if limits.daily_usd is not None:
                found.append(
                    BudgetScope(
                        "tenant_day",
                        f"TENANT#{tenant}#DAY#{day}",
                        limits.daily_usd,
                        next_day,
                        day_exp,
                    )
                )
            if limits.monthly_usd is not None:
                found.append(
                    BudgetScope(
                        "tenant_month",
                        f"TENANT#{tenant}#MONTH#{month}",
                        limits.monthly_usd,
                        next_month,
                        month_exp,
                    )
                )
        if s.budget_global_daily_usd is not None:
            found.append(
                BudgetScope(
                    "global_day", f"GLOBAL#DAY#{day}", s.budget_global_daily_usd, next_day, day_exp
                )
            )
        return found

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
        if self._store is None:
            return reservation
        for budget in self.scopes(scope, agent):
            try:
                after = self._reserve_on(budget, reservation, now)
            except BaseException:
                self.release(reservation)
                raise
            if isinstance(after, BudgetItem):
                self.release(reservation)
                raise self._refused(budget, after, scope, agent, now)
            reservation.scopes.append(budget)
            committed = from_nano(after)
            if budget.limit > 0:
                reservation.utilisation = max(
                    reservation.utilisation, float(committed / budget.limit * 100)
                )
        return reservation

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
            outcome = self._items.reserve(
                budget.key,
                held.rid,
                amount,
                room=limit - amount,
                limit=limit,
                expires_at=budget.expires_at,
                hold_until=held.expires_at,
                max_open=self._settings.budget_max_open_reservations,
            )
            if not isinstance(outcome, BudgetItem) or attempt:
                break
            expired = [e for e in outcome.open if e.expires_at < now]
            if not expired:
                break
            self._give_back(budget.key, expired)
        return outcome

    def _give_back(self, key: str, expired: list[OpenReservation]) -> list[OpenReservation]:
        released = self._items.give_back(key, expired)
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
    ) -> BudgetExceeded | JobBudgetExceeded:
        details = {"scope": budget.name, "limit_usd": str(budget.limit)}
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
        self._exhausted(budget, scope, agent)
        return _exceeded(budget, now)

    def release(self, reservation: Reservation) -> None:
        """Give a whole reservation back (the call failed or never ran)."""
        self._close(reservation, Decimal(0))

    def settle(
        self, reservation: Reservation, actual: Decimal, *, scope: CallScope | None, agent: str
    ) -> None:
        """Replace the reservation by the real cost; send threshold alerts it crosses."""
        for budget, spent in self._close(reservation, actual):
            if budget.job_cap:
                continue  # the job's own cap: the client's limit, not an operator's budget
            before = spent - actual
            for threshold in self._settings.budget_alert_thresholds:
                mark = budget.limit * threshold / 100
                if before < mark <= spent:
                    if threshold >= 100:
                        # Shared with refusals at the limit: one marker, one alert.
                        self._exhausted(budget, scope, agent)
                    else:
                        self._alert(budget, threshold, spent, scope, agent)

    def _close(
        self, reservation: Reservation, actual: Decimal
    ) -> list[tuple[BudgetScope, Decimal]]:
        if reservation.settled or self._store is None:
            return []
        reservation.settled = True
        reserved, cost = to_nano(reservation.amount), to_nano(actual)
        calls = 1 if cost > 0 else 0
        done: list[tuple[BudgetScope, Decimal]] = []
        for budget in reservation.scopes:
            log = {"budget": budget.key, "reservation": reservation.rid, "cost_usd": str(actual)}
            try:
                spent = self._store.settle(
                    budget.key, reservation.rid, reserved=reserved, actual=cost, calls=calls
                )
                if spent is None:  # given back already (it outlived its expiry)
                    if not cost:
                        continue
                    spent = self._store.record_late(budget.key, cost, calls)
                    logger.warning("budget settled after its reservation was given back", extra=log)
            except Exception:
                # The entry stays open and is given back at its expiry, not at period end.
                logger.exception(
                    "budget settlement failed; the reservation is held until it expires",
                    extra={**log, "held_until": reservation.expires_at},
                )
                continue
            done.append((budget, from_nano(spent)))
        return done

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
        key = task_key(scope)
        item = self._store.read([key]).get(key)
        released = self._give_back(key, list(item.open)) if item and item.open else []
        amount = from_nano(sum(e.amount for e in released))
        return SweepReport(checked=1 if item else 0, released=len(released), released_usd=amount)

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
                keys += [f"TENANT#{tenant}#DAY#{day}", f"TENANT#{tenant}#MONTH#{month}"]
            keys += [f"AGENT#{agent}#DAY#{day}" for agent in names]
            keys.append(f"GLOBAL#DAY#{day}")
        return list(dict.fromkeys(keys))

    # -- alerts

    def _exhausted(self, budget: BudgetScope, scope: CallScope | None, agent: str) -> None:
        """The 100% alert (spend reached the limit, or the limit refused a call), once."""
        if 100 not in self._settings.budget_alert_thresholds:
            return
        try:
            spent = self._items.mark_exhausted(budget.key)
        except Exception:
            logger.exception("budget alert marker failed", extra={"budget": budget.key})
            return
        if spent is not None:  # None: another call already sent this alert
            self._alert(budget, 100, from_nano(spent), scope, agent)

    def _alert(
        self,
        budget: BudgetScope,
        threshold: int,
        spent: Decimal,
        scope: CallScope | None,
        agent: str,
    ) -> None:
        message = {
            "type": "stratus.budget.threshold",
            "budget": budget.name,
            "key": budget.key,
            "threshold_percent": threshold,
            "spent_usd": str(spent),
            "limit_usd": str(budget.limit),
            "resets_at": iso(budget.resets_at),
            "tenant_id": scope.tenant_id if scope else None,
            "agent": agent,
            "stage": self._settings.stage,
        }
        logger.warning("budget threshold crossed", extra=message)
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        metrics.add_dimension(name="budget", value=budget.name)
        metrics.add_metric(name="BudgetAlerts", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
        try:
            self._alerts.publish(f"Stratus budget {budget.name} at {threshold}%", message)
        except Exception:  # an alert must never fail the call that triggered it
            logger.exception("budget alert could not be published")

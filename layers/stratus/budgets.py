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
order: ``ADD committed :r`` if ``committed <= limit - r`` (nano-USD integers) (DynamoDB conditions
cannot add, so ``limit - r`` is computed by the caller). ``committed`` is settled
spend plus outstanding reservations. A conditional write on one item is
atomic in DynamoDB, so concurrent callers are serialised on the item and
``committed`` never exceeds the limit; since every reservation is an upper
bound of its call's cost, settled spend never exceeds it either. If the
estimate were ever low, the overrun is at most that one call's excess, which
is smaller than one reservation. If a later scope refuses, the earlier ones are
released again (a compensating ``ADD -r``); while that happens a concurrent
caller may be refused although it would have fitted: conservative, never an
overspend.

Why not one ``TransactWriteItems`` across the scopes: it would be all-or-nothing,
but DynamoDB *rejects* (``TransactionConflict``) rather than queues concurrent
transactions on the same item, so 50 callers on one tenant's day item would
mostly fail with conflicts and need retry loops, at twice the write capacity.
Plain conditional updates serialise on the item, which is exactly the property
the bound needs.

**Thresholds.** Settlement is an atomic ``ADD spent :cost`` that returns the new
total, so exactly one call sees each threshold crossed (``before < t <= after``)
and sends its one alert per threshold per period, with no marker item. The 100%
alert comes either from spend reaching the limit or from the first refusal at
it, so it takes a conditional marker on the item to be sent once.

The items live behind :class:`stratus.gateway_stores.ports.BudgetStore` and the
alerts go out through an :class:`~stratus.gateway_stores.ports.AlertPublisher`
(SNS in the stack); without a store (no budgets table) budgets are off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from stratus.agents import CallScope
from stratus.config import Settings
from stratus.errors import BudgetExceeded
from stratus.gateway_stores.ports import AlertPublisher, BudgetStore
from stratus.observability import NAMESPACE, SERVICE, logger

LIMITS_CACHE_S = 60.0
#: Money on the budget items is stored in whole nano-USD (integers: exact, and
#: DynamoDB counters of integers never meet decimal-exponent corner cases).
NANO = Decimal(1_000_000_000)


def to_nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value())


def from_nano(value: Any) -> Decimal:
    return Decimal(int(value or 0)) / NANO


DAY_TTL = timedelta(days=40)
MONTH_TTL = timedelta(days=400)
TASK_TTL = timedelta(days=7)


@dataclass(frozen=True)
class BudgetScope:
    name: str
    key: str
    limit: Decimal
    #: When the period starts again; None for a per-task cap.
    resets_at: datetime | None
    expires_at: int


@dataclass
class Reservation:
    amount: Decimal
    scopes: list[BudgetScope] = field(default_factory=list)
    #: The highest percentage of any scope's limit committed after reserving.
    utilisation: float = 0.0
    settled: bool = False


@dataclass(frozen=True)
class TenantLimits:
    daily_usd: Decimal | None
    monthly_usd: Decimal | None


def _periods(now: datetime) -> tuple[str, str, datetime, datetime]:
    day = now.strftime("%Y-%m-%d")
    month = now.strftime("%Y-%m")
    next_day = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    next_month = (
        datetime(now.year + 1, 1, 1, tzinfo=UTC)
        if now.month == 12
        else datetime(now.year, now.month + 1, 1, tzinfo=UTC)
    )
    return day, month, next_day, next_month


def task_key(scope: CallScope) -> str:
    base = f"TASK#{scope.tenant_id}#{scope.kind}#{scope.scope_id}"
    # A session's budget unit is one turn, a request's or job's the whole unit.
    return f"{base}#{scope.step}" if scope.kind == "session" else base


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
        if scope is not None and s.budget_task_usd is not None:
            found.append(
                BudgetScope(
                    "task",
                    task_key(scope),
                    s.budget_task_usd,
                    None,
                    int((now + TASK_TTL).timestamp()),
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

    def reserve(self, scope: CallScope | None, agent: str, amount: Decimal) -> Reservation:
        """Reserve ``amount`` on every scope, or raise ``BudgetExceeded`` holding nothing."""
        reservation = Reservation(amount=amount)
        if self._store is None:
            return reservation
        for budget in self.scopes(scope, agent):
            room = to_nano(budget.limit) - to_nano(amount)
            try:
                after = (
                    self._store.reserve(
                        budget.key,
                        to_nano(amount),
                        room=room,
                        limit=to_nano(budget.limit),
                        expires_at=budget.expires_at,
                    )
                    if room >= 0
                    else None
                )
            except BaseException:
                self.release(reservation)
                raise
            if after is None:
                self.release(reservation)
                self._exhausted(budget, scope, agent)
                raise _exceeded(budget, self._clock())
            reservation.scopes.append(budget)
            committed = from_nano(after)
            if budget.limit > 0:
                reservation.utilisation = max(
                    reservation.utilisation, float(committed / budget.limit * 100)
                )
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Give a whole reservation back (the call failed or never ran)."""
        self._adjust(reservation, Decimal(0))

    def settle(
        self, reservation: Reservation, actual: Decimal, *, scope: CallScope | None, agent: str
    ) -> None:
        """Replace the reservation by the real cost; send threshold alerts it crosses."""
        for budget, spent in self._adjust(reservation, actual):
            before = spent - actual
            for threshold in self._settings.budget_alert_thresholds:
                mark = budget.limit * threshold / 100
                if before < mark <= spent:
                    if threshold >= 100:
                        # Shared with refusals at the limit: one marker, one alert.
                        self._exhausted(budget, scope, agent)
                    else:
                        self._alert(budget, threshold, spent, scope, agent)

    def _adjust(
        self, reservation: Reservation, actual: Decimal
    ) -> list[tuple[BudgetScope, Decimal]]:
        if reservation.settled or self._store is None:
            return []
        reservation.settled = True
        delta = to_nano(actual) - to_nano(reservation.amount)
        spent_add, calls = (to_nano(actual), 1) if actual > 0 else (0, 0)
        done: list[tuple[BudgetScope, Decimal]] = []
        for budget in reservation.scopes:
            try:
                spent = from_nano(self._store.adjust(budget.key, delta, spent_add, calls))
            except Exception:
                # The reservation stays held until the period ends: over-, never under-counted.
                logger.exception("budget settlement failed", extra={"budget": budget.key})
                continue
            done.append((budget, spent))
        return done

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
            "resets_at": _iso(budget.resets_at),
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


def _decimal(value: Any, default: Decimal | None) -> Decimal | None:
    return Decimal(str(value)) if value is not None else default


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _exceeded(budget: BudgetScope, now: float) -> BudgetExceeded:
    headers = {}
    if budget.resets_at is not None:
        headers["Retry-After"] = str(max(1, int(budget.resets_at.timestamp() - now)))
    return BudgetExceeded(
        f"the {budget.name.replace('_', ' ')} budget of {budget.limit} USD has no room for "
        "this call",
        details={
            "scope": budget.name,
            "limit_usd": str(budget.limit),
            "resets_at": _iso(budget.resets_at),
        },
        headers=headers,
    )

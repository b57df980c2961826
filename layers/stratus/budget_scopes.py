"""Budget scopes: their keys, limits and periods, money in nano-USD, the refusal.

Pure helpers of :mod:`stratus.budgets` (which re-exports what others import).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from stratus.agents import CallScope
from stratus.errors import BudgetExceeded

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
    #: The limit is the job's own ``max_cost_usd`` (a refusal: ``job_budget_exceeded``).
    job_cap: bool = False


@dataclass(frozen=True)
class TenantLimits:
    daily_usd: Decimal | None
    monthly_usd: Decimal | None


def periods(now: datetime) -> tuple[str, str, datetime, datetime]:
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


def decimal_or(value: Any, default: Decimal | None) -> Decimal | None:
    return Decimal(str(value)) if value is not None else default


def iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def exceeded(budget: BudgetScope, now: float) -> BudgetExceeded:
    headers = {}
    if budget.resets_at is not None:
        headers["Retry-After"] = str(max(1, int(budget.resets_at.timestamp() - now)))
    return BudgetExceeded(
        f"the {budget.name.replace('_', ' ')} budget of {budget.limit} USD has no room for "
        "this call",
        details={
            "scope": budget.name,
            "limit_usd": str(budget.limit),
            "resets_at": iso(budget.resets_at),
        },
        headers=headers,
    )

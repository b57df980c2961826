"""Budget scopes: their keys, limits and periods, money in nano-USD, the usage counters
the period items carry, the refusal.

Pure helpers of :mod:`stratus.budgets` (which re-exports what others import) and of
:mod:`stratus.rollups`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from stratus.agents import CallScope
from stratus.errors import BudgetExceeded
from stratus.gateway_stores.ports import UsageAdd
from stratus.usage import Usage

#: Money on the budget items is stored in whole nano-USD (integers: exact, and
#: DynamoDB counters of integers never meet decimal-exponent corner cases).
NANO = Decimal(1_000_000_000)


def to_nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value())


def from_nano(value: Any) -> Decimal:
    return Decimal(int(value or 0)) / NANO


#: How long a period's item outlives its period: it carries the period's usage, kept as
#: long as the usage rollups kept it (a day's 400 days, a month's 800).
DAY_TTL = timedelta(days=400)
MONTH_TTL = timedelta(days=800)
TASK_TTL = timedelta(days=7)

#: The usage counters of every breakdown member; money in whole nano-USD (``*_nusd``).
COUNTERS = (
    "calls",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nusd",
    "cache_hits",
    "saved_nusd",
    "ledger_hits",
)


def usage_counts(
    *,
    usage: Usage | None = None,
    cost: Decimal = Decimal(0),
    cache_hit: bool = False,
    saved: Decimal = Decimal(0),
    ledger_hit: bool = False,
) -> dict[str, int]:
    """One call's counters: a paid call (``calls`` 1), or a replay or cache hit (0)."""
    usage = usage or Usage()
    return {
        "calls": 0 if (cache_hit or ledger_hit) else 1,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost_nusd": to_nano(cost),
        "cache_hits": int(cache_hit),
        "saved_nusd": to_nano(saved),
        "ledger_hits": int(ledger_hit),
    }


def tenant_day_key(tenant_id: str, day: str) -> str:
    return f"TENANT#{tenant_id}#DAY#{day}"


def tenant_month_key(tenant_id: str, month: str) -> str:
    return f"TENANT#{tenant_id}#MONTH#{month}"


def agent_day_key(agent: str, day: str) -> str:
    return f"AGENT#{agent}#DAY#{day}"


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
    #: Kept in this process, not in the table: the cap of one synchronous request, which
    #: one Lambda invocation serves from start to end (nothing to share, nothing to leak).
    local: bool = False


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


def call_scopes(
    now: datetime,
    scope: CallScope | None,
    agent: str,
    *,
    task_usd: Decimal | None,
    agent_daily_usd: Decimal | None,
    tenant: TenantLimits | None,
    global_daily_usd: Decimal | None,
) -> list[BudgetScope]:
    """The budget scopes of a call, in reservation order, with their limits."""
    day, month, next_day, next_month = periods(now)
    day_exp = int((next_day + DAY_TTL).timestamp())
    month_exp = int((next_month + MONTH_TTL).timestamp())
    found: list[BudgetScope] = []
    caps = [c for c in (task_usd, scope.max_cost_usd if scope else None) if c is not None]
    if scope is not None and caps:
        job_cap = scope.max_cost_usd is not None and scope.max_cost_usd == min(caps)
        task_exp = int((now + TASK_TTL).timestamp())
        local = scope.kind == "request"
        found.append(
            BudgetScope("task", task_key(scope), min(caps), None, task_exp, job_cap, local)
        )
    if agent_daily_usd is not None:
        key = agent_day_key(agent, day)
        found.append(BudgetScope("agent_day", key, agent_daily_usd, next_day, day_exp))
    if scope is not None and tenant is not None:
        t = scope.tenant_id
        if tenant.daily_usd is not None:
            key = tenant_day_key(t, day)
            found.append(BudgetScope("tenant_day", key, tenant.daily_usd, next_day, day_exp))
        if tenant.monthly_usd is not None:
            key = tenant_month_key(t, month)
            found.append(
                BudgetScope("tenant_month", key, tenant.monthly_usd, next_month, month_exp)
            )
    if global_daily_usd is not None:
        key = f"GLOBAL#DAY#{day}"
        found.append(BudgetScope("global_day", key, global_daily_usd, next_day, day_exp))
    return found


#: The scopes whose items carry usage, and what their breakdown is by.
CARRIERS = {"tenant_day": "agent", "tenant_month": "agent", "agent_day": "model"}


def carriers(
    now: datetime,
    reserved: list[BudgetScope],
    scope: CallScope | None,
    *,
    agent: str,
    model: str,
    counts: dict[str, int],
) -> dict[str, tuple[UsageAdd, int]]:
    """The items that carry a call's usage (key -> what to add, and the expiry of a new
    item): the reserved items of the carrier scopes (the period the call was charged
    to), else the current period's."""
    day, month, next_day, next_month = periods(now)
    day_exp = int((next_day + DAY_TTL).timestamp())
    wanted = [("agent_day", agent_day_key(agent, day), day_exp)]
    if scope is not None:
        month_exp = int((next_month + MONTH_TTL).timestamp())
        wanted += [
            ("tenant_day", tenant_day_key(scope.tenant_id, day), day_exp),
            ("tenant_month", tenant_month_key(scope.tenant_id, month), month_exp),
        ]
    held = {b.name: b.key for b in reserved}
    members = {"agent": agent, "model": model}
    return {
        held.get(name, key): (UsageAdd(members[CARRIERS[name]], counts), expires)
        for name, key, expires in wanted
    }

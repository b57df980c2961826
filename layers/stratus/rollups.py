"""Usage and cost per tenant, agent, day, month and billable unit.

A model call's usage is counted by its settlement, in the same round trip
(:meth:`stratus.budgets.BudgetLedger.settle`): the budget items of the period carry
it, per agent on the tenant's items, per model on the agent's item. This module
reads them back, and keeps the one row the budget items do not have: the total of a
job or a session, in the usage table (``pk``, ``sk``), added to with ``ADD``:

================================ ================ ================================
item                             where            what
================================ ================ ================================
``TENANT#<t>#DAY#<date>``        budgets table    a tenant's day, per agent
``TENANT#<t>#MONTH#<month>``     budgets table    a tenant's month, per agent
``AGENT#<a>#DAY#<date>``         budgets table    an agent's day, all tenants, per model
``SCOPE#<t>#<kind>#<id>``        usage table      one session or job (sk ``TOTAL``)
================================ ================ ================================

``GET /v1/usage?period=day|month`` is one read of the caller's tenant item. A
request's own usage is in its answer: no row is kept for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from stratus.agents import CallScope
from stratus.budget_scopes import COUNTERS, tenant_day_key, tenant_month_key, usage_counts
from stratus.budgets import BudgetLedger, from_nano
from stratus.config import Settings
from stratus.gateway_stores.ports import RollupStore
from stratus.observability import logger
from stratus.usage import Usage

__all__ = ["COUNTERS", "UsageRollups", "period_key", "usage_row"]

#: The billable units whose totals are kept (a request's is in its answer).
TOTALLED = ("job", "session")
SCOPE_TTL = timedelta(days=90)


def usage_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """A member's counters as the API shows them: counts, and money as USD strings."""
    row: dict[str, Any] = {}
    for name in COUNTERS:
        if name.endswith("_nusd"):
            row[name.removesuffix("_nusd") + "_usd"] = str(from_nano(item.get(name)).normalize())
        else:
            row[name] = int(item.get(name, 0))
    return row


def period_key(period: str, now: datetime) -> str:
    return now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m")


class UsageRollups:
    """Usage reports (from the budget items of ``budgets``) and job and session totals
    (``store``); each part is off (reports zero, records nothing) without its store."""

    def __init__(
        self,
        settings: Settings,
        store: RollupStore | None,
        *,
        clock: Callable[[], float] = time.time,
        budgets: BudgetLedger | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._budgets = budgets

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def record(
        self,
        *,
        scope: CallScope | None,
        agent: str,
        model: str,
        usage: Usage,
        cost: Decimal,
        cache_hit: bool = False,
        saved: Decimal = Decimal(0),
        ledger_hit: bool = False,
    ) -> None:
        """Add one call to its job's or session's total: one write (none for a request;
        the tenant and agent breakdowns are the settlement's)."""
        if self._store is None or scope is None or scope.kind not in TOTALLED:
            return
        counts = usage_counts(
            usage=usage, cost=cost, cache_hit=cache_hit, saved=saved, ledger_hit=ledger_hit
        )
        pk = f"SCOPE#{scope.tenant_id}#{scope.kind}#{scope.scope_id}"
        expires = int((datetime.fromtimestamp(self._clock(), tz=UTC) + SCOPE_TTL).timestamp())
        try:
            self._store.add(pk, "TOTAL", counts, expires_at=expires)
        except Exception:  # bookkeeping never fails a paid call
            logger.exception("usage rollup failed", extra={"pk": pk})

    def tenant_usage(self, tenant_id: str, period: str) -> dict[str, Any]:
        """The tenant's spend in the current day or month, by agent (one read)."""
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        key = period_key(period, now)
        pk = tenant_day_key(tenant_id, key) if period == "day" else tenant_month_key(tenant_id, key)
        breakdown = self._budgets.usage(pk) if self._budgets is not None else {}
        agents = {agent: usage_row(counts) for agent, counts in sorted(breakdown.items())}
        total = sum((from_nano(c.get("cost_nusd")) for c in breakdown.values()), Decimal(0))
        return {
            "tenant_id": tenant_id,
            "period": period,
            "key": key,
            "cost_usd": str(total.normalize()),
            "agents": agents,
        }

    def scope_usage(self, scope: CallScope) -> dict[str, Any]:
        if self._store is None:
            return {}
        return self._store.row(f"SCOPE#{scope.tenant_id}#{scope.kind}#{scope.scope_id}", "TOTAL")

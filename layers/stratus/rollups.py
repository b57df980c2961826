"""Usage and cost rolled up per tenant, agent, day, month and billable unit.

The usage table (``pk``, ``sk``) holds counters that every model call adds to
with ``ADD`` (atomic, no read), so concurrent calls never lose an update:

================================ ================ =========================
pk                               sk               what
================================ ================ =========================
``TENANT#<t>#DAY#<date>``        ``AGENT#<a>``    a tenant's day, per agent
``TENANT#<t>#MONTH#<month>``     ``AGENT#<a>``    a tenant's month, per agent
``AGENT#<a>#DAY#<date>``         ``MODEL#<m>``    an agent's day, all tenants
``SCOPE#<t>#<kind>#<id>``        ``TOTAL``        one request, session or job
================================ ================ =========================

``GET /v1/usage?period=day|month`` is one ``Query`` on the caller's tenant row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from stratus.agents import CallScope
from stratus.budgets import from_nano, to_nano
from stratus.config import Settings
from stratus.gateway_stores.ports import RollupStore
from stratus.observability import logger
from stratus.usage import Usage

#: Counters of every row; money in whole nano-USD (``*_nusd``), exact integers.
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


def usage_row(item: dict[str, Any]) -> dict[str, Any]:
    """A rollup item as the API shows it: counts, and money as USD strings."""
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
    """Usage counters; off (records nothing, reports zero) without a store."""

    def __init__(
        self,
        settings: Settings,
        store: RollupStore | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock

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
        if self._store is None:
            return
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        counts: dict[str, Any] = {
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
        day = period_key("day", now)
        month = period_key("month", now)
        rows: list[tuple[str, str, int]] = [
            (
                f"AGENT#{agent}#DAY#{day}",
                f"MODEL#{model}",
                int((now + timedelta(days=400)).timestamp()),
            )
        ]
        if scope is not None:
            t = scope.tenant_id
            rows += [
                (
                    f"TENANT#{t}#DAY#{day}",
                    f"AGENT#{agent}",
                    int((now + timedelta(days=400)).timestamp()),
                ),
                (
                    f"TENANT#{t}#MONTH#{month}",
                    f"AGENT#{agent}",
                    int((now + timedelta(days=800)).timestamp()),
                ),
                (
                    f"SCOPE#{t}#{scope.kind}#{scope.scope_id}",
                    "TOTAL",
                    int((now + timedelta(days=90)).timestamp()),
                ),
            ]
        for pk, sk, expires in rows:
            try:
                self._store.add(pk, sk, counts, expires_at=expires)
            except Exception:  # bookkeeping never fails a paid call
                logger.exception("usage rollup failed", extra={"pk": pk})

    def tenant_usage(self, tenant_id: str, period: str) -> dict[str, Any]:
        """The tenant's spend in the current day or month, by agent."""
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        key = period_key(period, now)
        pk = f"TENANT#{tenant_id}#{'DAY' if period == 'day' else 'MONTH'}#{key}"
        agents: dict[str, dict[str, Any]] = {}
        total = Decimal(0)
        for item in self._store.rows(pk) if self._store is not None else []:
            agent = str(item["sk"]).removeprefix("AGENT#")
            agents[agent] = usage_row(item)
            total += from_nano(item.get("cost_nusd"))
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

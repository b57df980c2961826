"""Cost and tokens by agent, model and day, from the usage the budget items carry.

The settlement of every model call adds its usage to the budget items of its period
(:mod:`stratus.rollups`): ``AGENT#<agent>#DAY#<date>`` carries it per model (all
tenants), ``TENANT#<t>#DAY#<date>`` per agent. ``GET /v1/usage`` reads one tenant
item; this report reads the same items for a range of days, through the same port
(:class:`stratus.gateway_stores.ports.BudgetStore` ``read``, one ``BatchGetItem`` per
100 items) and the same counters (:data:`stratus.budget_scopes.COUNTERS`). Used by
``stratus cost`` (:mod:`infra.cost_cli`) and the local console.

With a tenant the per-tenant items have no model breakdown: the model is ``*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from stratus.budget_scopes import COUNTERS, agent_day_key, from_nano, tenant_day_key
from stratus.gateway_stores.ports import BudgetStore

#: Token counters summed into ``tokens``.
TOKENS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
ALL_MODELS = "*"


def known_agents() -> list[str]:
    """Every agent that can spend: each package's agents (its ``SPEC`` and the other
    specs it defines, such as a workflow's worker and reviewer)."""
    import importlib

    from functions.agents import agent_names
    from stratus.agents import AgentSpec

    names: dict[str, None] = {}
    for package in agent_names():
        module = importlib.import_module(f"functions.agents.{package}")
        names[package] = None
        for value in vars(module).values():
            if isinstance(value, AgentSpec):
                names[value.name] = None
    return sorted(names)


def day_range(days: int, now: datetime | None = None) -> list[str]:
    """The last ``days`` UTC days, oldest first, ending today."""
    if days < 1:
        raise ValueError("days must be at least 1")
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


@dataclass
class Row:
    """One agent's usage on one model and day."""

    day: str
    agent: str
    model: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def cost_usd(self) -> Decimal:
        return from_nano(self.counts.get("cost_nusd"))

    @property
    def tokens(self) -> int:
        return sum(int(self.counts.get(name, 0)) for name in TOKENS)

    def as_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"day": self.day, "agent": self.agent, "model": self.model}
        for name in COUNTERS:
            if name.endswith("_nusd"):
                row[name.removesuffix("_nusd") + "_usd"] = str(
                    from_nano(self.counts.get(name)).normalize()
                )
            else:
                row[name] = int(self.counts.get(name, 0))
        row["tokens"] = self.tokens
        return row


@dataclass
class CostReport:
    days: list[str]
    tenant: str | None
    rows: list[Row]

    @property
    def agents(self) -> list[str]:
        return sorted({row.agent for row in self.rows})

    @property
    def total_usd(self) -> Decimal:
        return sum((row.cost_usd for row in self.rows), Decimal(0))

    def per_day(self, agent: str, measure: str = "cost") -> list[float]:
        """One value per day of the range: cost in USD or tokens."""
        values = dict.fromkeys(self.days, 0.0)
        for row in self.rows:
            if row.agent == agent:
                values[row.day] += float(row.cost_usd) if measure == "cost" else row.tokens
        return list(values.values())

    def by_agent(self) -> dict[str, dict[str, Any]]:
        """Per agent: calls, tokens and cost over the range, and the per-day series."""
        out: dict[str, dict[str, Any]] = {}
        for agent in self.agents:
            mine = [row for row in self.rows if row.agent == agent]
            cost = sum((row.cost_usd for row in mine), Decimal(0))
            calls = sum(int(row.counts.get("calls", 0)) for row in mine)
            out[agent] = {
                "calls": calls,
                "tokens": sum(row.tokens for row in mine),
                "cost_usd": str(cost.normalize()),
                "cost_per_call_usd": str((cost / calls).normalize()) if calls else "0",
                "models": sorted({row.model for row in mine}),
                "daily_cost_usd": self.per_day(agent, "cost"),
                "daily_tokens": self.per_day(agent, "tokens"),
            }
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "tenant_id": self.tenant,
            "cost_usd": str(self.total_usd.normalize()),
            "agents": self.by_agent(),
            "rows": [row.as_json() for row in self.rows],
        }


def cost_report(
    store: BudgetStore,
    *,
    agents: Iterable[str],
    days: Sequence[str],
    tenant: str | None = None,
) -> CostReport:
    """The report of ``days`` (one batched read of the items; zero rows are left out):
    per model from the agents' items, or per agent from the tenant's items."""
    keys: dict[str, tuple[str, str]] = {}
    if tenant:
        keys = {tenant_day_key(tenant, day): ("", day) for day in days}
    else:
        keys = {agent_day_key(a, day): (a, day) for a in dict.fromkeys(agents) for day in days}
    items = store.read(list(keys))
    rows: list[Row] = []
    for key, (agent, day) in keys.items():
        item = items.get(key)
        if item is None:
            continue
        for member, counts in item.usage.items():
            if not any(counts.values()):
                continue
            if tenant:
                rows.append(Row(day, member, ALL_MODELS, dict(counts)))
            else:
                rows.append(Row(day, agent, member, dict(counts)))
    rows.sort(key=lambda r: (r.day, r.agent, r.model))
    return CostReport(list(days), tenant, rows)


__all__ = ["ALL_MODELS", "CostReport", "Row", "cost_report", "day_range", "known_agents"]

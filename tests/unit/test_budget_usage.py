"""Budgets in one wave, and the usage their settlement carries, on the in-memory store.

Time is an injected clock; concurrency is proven with barriers (a wave that were issued
one request after another would break them), never with timings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from stratus.agents import CallScope
from stratus.budgets import BudgetLedger, to_nano
from stratus.config import Settings
from stratus.errors import BudgetExceeded
from stratus.gateway_stores.memory import MemoryAlerts, MemoryBudgetStore, MemoryRollupStore
from stratus.gateway_stores.ports import BudgetItem, UsageAdd
from stratus.rollups import UsageRollups
from stratus.usage import Usage

NOON = datetime(2025, 6, 10, 12, 0, tzinfo=UTC).timestamp()
DAY, MONTH = "TENANT#t#DAY#2025-06-10", "TENANT#t#MONTH#2025-06"
AGENT_DAY = "AGENT#triage#DAY#2025-06-10"
TASK = "TASK#t#job#r-1"
USAGE = Usage(input_tokens=2000, cached_input_tokens=1536, output_tokens=300, reasoning_tokens=200)


@dataclass
class Clock:
    now: float = NOON

    def __call__(self) -> float:
        return self.now


def ledger(store: Any = None, **overrides: Any) -> tuple[BudgetLedger, Any, Clock]:
    settings = Settings(**{"budget_hold_margin_s": 30, **overrides})
    store = store if store is not None else MemoryBudgetStore()
    clock = Clock()
    return BudgetLedger(settings, store, alerts=MemoryAlerts(), clock=clock), store, clock


def request(scope_id: str = "r-1") -> CallScope:
    """A job's scope: its task cap is an item of the table (a synchronous request's cap
    lives in its process: test_a_requests_own_cap_stays_in_its_process)."""
    return CallScope("t", "triage", "job", scope_id)


def counts(**nonzero: int) -> dict[str, int]:
    """A breakdown member as stored: only the counters that were ever added to."""
    return {name: value for name, value in nonzero.items() if value}


PAID = counts(
    calls=1,
    input_tokens=2000,
    cached_input_tokens=1536,
    output_tokens=300,
    reasoning_tokens=200,
    cost_nusd=3_772_000,
)


def test_a_settlement_carries_the_calls_usage_on_the_tenant_and_agent_items() -> None:
    budgets, store, _ = ledger()  # defaults: task, tenant day and tenant month limits
    held = budgets.reserve(request(), "triage", Decimal("0.4"))
    assert [b.name for b in held.scopes] == ["task", "tenant_day", "tenant_month"]
    budgets.settle(
        held, Decimal("0.003772"), scope=request(), agent="triage", model="gpt-5", usage=USAGE
    )
    items = store.read([DAY, MONTH, AGENT_DAY, TASK])
    assert items[DAY].usage == items[MONTH].usage == {"triage": PAID}  # per agent
    assert items[AGENT_DAY].usage == {"gpt-5": PAID}  # per model
    assert items[TASK].usage == {}  # a task is not a period: it carries nothing
    assert items[DAY].spent == items[DAY].committed == 3_772_000 and items[DAY].open == ()
    # The agent's day has no limit: an unconditional add, no budget attributes on it.
    assert items[AGENT_DAY] == BudgetItem(usage={"gpt-5": PAID})
    assert "committed" not in store.item(AGENT_DAY)

    other = budgets.reserve(request("r-2"), "triage", Decimal("0.4"))
    budgets.settle(
        other,
        Decimal("0.001"),
        scope=request("r-2"),
        agent="triage",
        model="gpt-5-mini",
        usage=Usage(input_tokens=5, output_tokens=1),
    )
    items = store.read([DAY, AGENT_DAY])
    assert items[DAY].usage["triage"]["calls"] == 2
    assert items[DAY].usage["triage"]["cost_nusd"] == 3_772_000 + 1_000_000
    assert set(items[AGENT_DAY].usage) == {"gpt-5", "gpt-5-mini"}


def test_usage_is_recorded_whatever_limits_are_configured() -> None:
    budgets, store, _ = ledger(
        budget_task_usd=None, budget_tenant_daily_usd=None, budget_tenant_monthly_usd=None
    )
    held = budgets.reserve(request(), "triage", Decimal("0.4"))
    assert held.scopes == []
    budgets.settle(
        held, Decimal("0.003772"), scope=request(), agent="triage", model="gpt-5", usage=USAGE
    )
    items = store.read([DAY, MONTH, AGENT_DAY])
    assert {k: i.usage for k, i in items.items()} == {
        DAY: {"triage": PAID},
        MONTH: {"triage": PAID},
        AGENT_DAY: {"gpt-5": PAID},
    }
    assert all(i.committed == i.spent == 0 for i in items.values())


def test_agent_and_model_names_with_separators_never_collide() -> None:
    budgets, store, _ = ledger()
    names = [("a-b.c:d#e", "ft:gpt-4o:org#x.1"), ("a", "m"), ("a-b", "ft:gpt-4o")]
    for i, (agent, model) in enumerate(names):
        scope = CallScope("t", agent, "request", f"r-{i}")
        held = budgets.reserve(scope, agent, Decimal("0.01"))
        budgets.settle(
            held,
            Decimal("0.000001"),
            scope=scope,
            agent=agent,
            model=model,
            usage=Usage(input_tokens=i + 1),
        )
    usage = store.read([DAY])[DAY].usage
    assert usage == {
        agent: counts(calls=1, input_tokens=i + 1, cost_nusd=1000)
        for i, (agent, _) in enumerate(names)
    }
    day = datetime.fromtimestamp(NOON, tz=UTC).strftime("%Y-%m-%d")
    for i, (agent, model) in enumerate(names):
        key = f"AGENT#{agent}#DAY#{day}"
        assert store.read([key])[key].usage == {
            model: counts(calls=1, input_tokens=i + 1, cost_nusd=1000)
        }


def test_replays_and_cache_hits_are_counted_on_the_carriers_without_spending() -> None:
    budgets, store, _ = ledger()
    budgets.record_unpaid(scope=request(), agent="triage", model="gpt-5", ledger_hit=True)
    budgets.record_unpaid(
        scope=request(), agent="triage", model="gpt-5", cache_hit=True, saved=Decimal("0.002")
    )
    items = store.read([DAY, MONTH, AGENT_DAY])
    hits = counts(ledger_hits=1, cache_hits=1, saved_nusd=2_000_000)
    assert items[DAY] == items[MONTH] == BudgetItem(usage={"triage": hits})
    assert items[AGENT_DAY] == BudgetItem(usage={"gpt-5": hits})
    # Without a call scope (a script), only the agent's day.
    budgets.record_unpaid(scope=None, agent="triage", model="gpt-5", ledger_hit=True)
    assert store.read([AGENT_DAY])[AGENT_DAY].usage["gpt-5"]["ledger_hits"] == 2
    assert store.read([DAY])[DAY].usage["triage"]["ledger_hits"] == 1


def test_a_late_settlement_records_its_usage_once() -> None:
    budgets, store, _ = ledger()
    held = budgets.reserve(request(), "triage", Decimal("0.4"))
    for key in (TASK, DAY, MONTH):  # the sweep gave it back: the call was only slow
        store.give_back(key, store.read([key])[key].open)
    budgets.settle(
        held, Decimal("0.003772"), scope=request(), agent="triage", model="gpt-5", usage=USAGE
    )
    items = store.read([DAY, MONTH, AGENT_DAY])
    assert items[DAY].usage == items[MONTH].usage == {"triage": PAID}
    assert items[DAY].spent == items[DAY].committed == 3_772_000
    budgets.settle(  # a second settlement of the same reservation is a no-op
        held, Decimal("0.003772"), scope=request(), agent="triage", model="gpt-5", usage=USAGE
    )
    assert store.read([DAY])[DAY].usage == {"triage": PAID}


def test_usage_stays_on_the_day_the_call_was_charged_to() -> None:
    budgets, store, clock = ledger()
    clock.now = datetime(2025, 6, 10, 23, 59, 50, tzinfo=UTC).timestamp()
    held = budgets.reserve(request(), "triage", Decimal("0.4"))
    clock.now += 20  # settled after midnight
    budgets.settle(
        held, Decimal("0.003772"), scope=request(), agent="triage", model="gpt-5", usage=USAGE
    )
    assert store.read([DAY])[DAY].usage == {"triage": PAID}  # with its spend
    assert "TENANT#t#DAY#2025-06-11" not in store.read(["TENANT#t#DAY#2025-06-11"])
    # The agent's day holds no reservation: the current day carries it.
    assert store.read(["AGENT#triage#DAY#2025-06-11"])["AGENT#triage#DAY#2025-06-11"].usage


class Lockstep(MemoryBudgetStore):
    """Every write waits until ``parties`` writes are in flight together: a wave issued one
    request after another breaks the barrier (BrokenBarrierError) instead of passing."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)
        self.threads: set[int] = set()

    def _together(self) -> None:
        self.threads.add(threading.get_ident())
        self.barrier.wait()

    def reserve(self, key: str, rid: str, amount: int, **kwargs: Any) -> int | BudgetItem:
        self._together()
        return super().reserve(key, rid, amount, **kwargs)

    def settle(self, key: str, rid: str, **kwargs: Any) -> int | None:
        self._together()
        return super().settle(key, rid, **kwargs)

    def add_usage(self, key: str, usage: UsageAdd, *, expires_at: int) -> None:
        self._together()
        super().add_usage(key, usage, expires_at=expires_at)


def test_every_scopes_reservation_and_settlement_is_issued_together() -> None:
    store = Lockstep(parties=3)
    budgets, _, _ = ledger(store)
    held = budgets.reserve(request(), "triage", Decimal("0.4"))  # task, tenant day, month
    assert len(held.scopes) == 3 and len(store.threads) == 3
    # The settlement: three scopes and the agent's day (no limit on it), one wave of four.
    store.barrier = threading.Barrier(4, timeout=10)
    store.threads.clear()
    budgets.settle(
        held, Decimal("0.003772"), scope=request(), agent="triage", model="gpt-5", usage=USAGE
    )
    assert len(store.threads) == 4
    assert store.read([DAY])[DAY].usage == {"triage": PAID}


def test_a_refusal_releases_the_scopes_that_accepted_and_names_the_first_refusing_one() -> None:
    budgets, store, _ = ledger(
        budget_tenant_daily_usd=Decimal("0.3"), budget_tenant_monthly_usd=Decimal("0.2")
    )
    with pytest.raises(BudgetExceeded) as refused:
        budgets.reserve(request(), "triage", Decimal("0.4"))  # the task fits, both tenants refuse
    assert refused.value.details["scope"] == "tenant_day"  # the first in scope order
    assert store.read([TASK])[TASK] == BudgetItem()  # the task's hold was given back
    # Both refused without a write (0.4 can never fit); the day's marker of its 100% alert.
    assert store.read([DAY, MONTH]) == {DAY: BudgetItem()}

    budgets, store, _ = ledger(budget_tenant_monthly_usd=Decimal("0.5"))
    budgets.reserve(request("r-0"), "triage", Decimal("0.3"))
    with pytest.raises(BudgetExceeded) as refused:
        budgets.reserve(request(), "triage", Decimal("0.3"))  # only the month refuses
    assert refused.value.details["scope"] == "tenant_month"
    items = store.read([TASK, DAY, MONTH])
    assert items[TASK] == BudgetItem()
    assert items[DAY].committed == items[MONTH].committed == to_nano(Decimal("0.3"))
    assert len(items[DAY].open) == 1  # only r-0's


class BrokenMonth(MemoryBudgetStore):
    def reserve(self, key: str, rid: str, amount: int, **kwargs: Any) -> int | BudgetItem:
        if key.startswith("TENANT#t#MONTH#"):
            raise RuntimeError("ProvisionedThroughputExceededException")
        return super().reserve(key, rid, amount, **kwargs)


def test_an_error_on_one_scope_releases_the_others_and_is_raised() -> None:
    budgets, store, _ = ledger(BrokenMonth())
    with pytest.raises(RuntimeError, match="Throughput"):
        budgets.reserve(request(), "triage", Decimal("0.4"))
    items = store.read([TASK, DAY])
    assert items[TASK] == items[DAY] == BudgetItem()


def test_tenant_usage_is_read_from_the_budget_items_in_the_same_shape() -> None:
    budgets, _, clock = ledger()
    rollups = UsageRollups(Settings(), MemoryRollupStore(), clock=clock, budgets=budgets)
    for scope_id, agent in (("r-1", "triage"), ("r-2", "returns")):
        scope = CallScope("t", agent, "request", scope_id)
        held = budgets.reserve(scope, agent, Decimal("0.4"))
        budgets.settle(
            held, Decimal("0.003772"), scope=scope, agent=agent, model="gpt-5", usage=USAGE
        )
    budgets.record_unpaid(scope=request(), agent="triage", model="gpt-5", ledger_hit=True)
    row = {
        "calls": 1,
        "input_tokens": 2000,
        "cached_input_tokens": 1536,
        "output_tokens": 300,
        "reasoning_tokens": 200,
        "cost_usd": "0.003772",
        "cache_hits": 0,
        "saved_usd": "0",
        "ledger_hits": 0,
    }
    assert rollups.tenant_usage("t", "day") == {
        "tenant_id": "t",
        "period": "day",
        "key": "2025-06-10",
        "cost_usd": "0.007544",
        "agents": {"returns": row, "triage": {**row, "ledger_hits": 1}},
    }
    assert rollups.tenant_usage("t", "month")["key"] == "2025-06"
    assert rollups.tenant_usage("t", "month")["agents"] == {
        "returns": row,
        "triage": {**row, "ledger_hits": 1},
    }
    assert rollups.tenant_usage("nobody", "day") == {
        "tenant_id": "nobody",
        "period": "day",
        "key": "2025-06-10",
        "cost_usd": "0",
        "agents": {},
    }


def test_only_jobs_and_sessions_keep_a_total_row() -> None:
    store = MemoryRollupStore()
    rollups = UsageRollups(Settings(), store, clock=Clock())
    for kind in ("request", "job", "session"):
        rollups.record(
            scope=CallScope("t", "triage", kind, "u-1"),
            agent="triage",
            model="gpt-5",
            usage=USAGE,
            cost=Decimal("0.003772"),
        )
    rollups.record(scope=None, agent="triage", model="gpt-5", usage=USAGE, cost=Decimal(1))
    assert store.rows("SCOPE#t#request#u-1") == []
    for kind in ("job", "session"):
        (row,) = store.rows(f"SCOPE#t#{kind}#u-1")
        assert (row["sk"], row["calls"], row["cost_nusd"]) == ("TOTAL", 1, 3_772_000)
    assert rollups.scope_usage(CallScope("t", "triage", "job", "u-1"))["input_tokens"] == 2000


def test_a_requests_own_cap_stays_in_its_process() -> None:
    """One invocation serves a synchronous request: its cap costs no table write."""
    budgets, store, _ = ledger(budget_task_usd=Decimal("0.5"))
    scope = CallScope("t", "triage", "request", "q-1")
    held = budgets.reserve(scope, "triage", Decimal("0.4"))
    assert [b.name for b in held.scopes] == ["task", "tenant_day", "tenant_month"]
    assert store.read(["TASK#t#request#q-1"]) == {}
    with pytest.raises(BudgetExceeded) as refused:  # the cap still holds in the process
        budgets.reserve(scope, "triage", Decimal("0.2"))
    assert refused.value.details["scope"] == "task"
    budgets.settle(
        held, Decimal("0.003772"), scope=scope, agent="triage", model="gpt-5", usage=USAGE
    )
    budgets.reserve(scope, "triage", Decimal("0.4"))  # room again after the settlement
    assert store.read([DAY])[DAY].usage == {"triage": PAID}

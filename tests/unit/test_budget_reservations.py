"""Reservations that cannot leak, and a job's own cap, on the in-memory budget store.

Time is an injected clock: nothing here sleeps or reads the wall clock in an assert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from stratus.agents import CallScope
from stratus.budgets import BudgetLedger, from_nano, to_nano
from stratus.config import Settings
from stratus.errors import BudgetExceeded, JobAlreadyFinished, JobBudgetExceeded
from stratus.gateway_stores.memory import MemoryAlerts, MemoryBudgetStore
from stratus.gateway_stores.ports import BudgetItem, OpenReservation, UsageAdd
from stratus.usage import Usage

#: Noon, so that no test crosses a day's end.
NOON = datetime(2025, 6, 10, 12, 0, tzinfo=UTC).timestamp()
TASK = "TASK#t#job#job-1"


@dataclass
class Clock:
    now: float = NOON

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Left:
    seconds: float

    def remaining_s(self) -> float:
        return self.seconds


def ledger(store: Any = None, **overrides: Any) -> tuple[BudgetLedger, Any, Clock]:
    defaults: dict[str, Any] = {
        "budget_tenant_daily_usd": None,
        "budget_tenant_monthly_usd": None,
        "budget_task_usd": Decimal("1"),
        "budget_hold_margin_s": 30,
    }
    settings = Settings(**{**defaults, **overrides})
    store = store if store is not None else MemoryBudgetStore()
    clock = Clock()
    return BudgetLedger(settings, store, alerts=MemoryAlerts(), clock=clock), store, clock


def job(max_cost_usd: Decimal | None = None, step: str = "main") -> CallScope:
    return CallScope("t", "triage", "job", "job-1", step=step, max_cost_usd=max_cost_usd)


#: The usage every settlement here records besides its cost.
USAGE = Usage(input_tokens=10)


def test_a_reservation_is_held_until_the_deadline_plus_the_margin() -> None:
    budgets, store, _ = ledger()
    held = budgets.reserve(job(), "triage", Decimal("0.4"), deadline=Left(12.5))
    assert held.expires_at == int(NOON + 12.5 + 30) + 1  # rounded up, never early
    (entry,) = store.read([TASK])[TASK].open
    assert entry == OpenReservation(held.rid, to_nano(Decimal("0.4")), held.expires_at)
    # Without a deadline (scripts, tests): the longest a Lambda function can run.
    free = budgets.reserve(job(), "triage", Decimal("0.1"))
    assert free.expires_at == int(NOON + 900 + 30) + 1


def test_an_expired_reservation_is_given_back_when_it_would_refuse_a_call() -> None:
    budgets, store, clock = ledger()
    budgets.reserve(job(), "triage", Decimal("0.7"), deadline=Left(60))  # then the process dies
    clock.now += 60  # the deadline, but not the margin: it may still settle
    with pytest.raises(BudgetExceeded) as refused:
        budgets.reserve(job(), "triage", Decimal("0.5"), deadline=Left(60))
    assert refused.value.details["scope"] == "task"
    assert from_nano(store.read([TASK])[TASK].committed) == Decimal("0.7")
    clock.now += 32  # past the expiry: the refusal gives it back and reserves again
    again = budgets.reserve(job(), "triage", Decimal("0.5"), deadline=Left(60))
    assert [b.name for b in again.scopes] == ["task"]
    item = store.read([TASK])[TASK]
    assert from_nano(item.committed) == Decimal("0.5")
    assert [e.rid for e in item.open] == [again.rid]


def test_a_late_settlement_after_the_give_back_counts_the_cost_once() -> None:
    budgets, store, clock = ledger()
    slow = budgets.reserve(job(), "triage", Decimal("0.7"), deadline=Left(10))
    clock.now += 100
    budgets.reserve(job(), "triage", Decimal("0.5"))  # gives the slow one back
    budgets.settle(
        slow, Decimal("0.2"), scope=job(), agent="triage", model="gpt-5-mini", usage=USAGE
    )
    item = store.read([TASK])[TASK]
    assert from_nano(item.spent) == Decimal("0.2")
    assert from_nano(item.committed) == Decimal("0.7")  # 0.5 still open + 0.2 spent


class FailingSettlements(MemoryBudgetStore):
    """DynamoDB refuses every settlement (throttled past botocore's retries)."""

    def settle(
        self,
        key: str,
        rid: str,
        *,
        reserved: int,
        actual: int,
        calls: int,
        usage: UsageAdd | None = None,
    ) -> int | None:
        raise RuntimeError("ProvisionedThroughputExceededException")


def test_a_failed_settlement_leaves_the_entry_open_until_its_expiry() -> None:
    budgets, store, clock = ledger(FailingSettlements())
    held = budgets.reserve(job(), "triage", Decimal("0.7"), deadline=Left(10))
    budgets.settle(
        held, Decimal("0.2"), scope=job(), agent="triage", model="gpt-5-mini", usage=USAGE
    )  # logged, not raised
    assert [e.rid for e in store.read([TASK])[TASK].open] == [held.rid]  # not lost
    clock.now += 42
    report = budgets.sweep_expired(keys=[TASK])
    assert (report.checked, report.released, report.released_usd) == (1, 1, Decimal("0.7"))
    assert store.read([TASK])[TASK] == BudgetItem(committed=0, spent=0, open=())


def test_the_sweep_gives_back_only_expired_entries_of_the_current_periods() -> None:
    budgets, store, clock = ledger(
        budget_tenant_daily_usd=Decimal("50"),
        budget_tenant_monthly_usd=Decimal("1000"),
        budget_agent_daily_usd=Decimal("20"),
    )
    scope = CallScope("t", "triage", "request", "r-1")
    budgets.reserve(scope, "triage", Decimal("0.3"), deadline=Left(5))
    clock.now += 20
    live = budgets.reserve(scope, "triage", Decimal("0.1"), deadline=Left(60))
    clock.now += 20  # dead expired (5 + 30 margin), live has 70 s to go
    report = budgets.sweep_expired(tenant_ids=["t", "nobody"], agents=["triage"])
    day = "2025-06-10"
    keys = {f"TENANT#t#DAY#{day}", "TENANT#t#MONTH#2025-06", f"AGENT#triage#DAY#{day}"}
    assert report.released == 3 and report.released_usd == Decimal("0.9")
    assert report.checked == 3  # the items that exist; no scan of the table
    for key in keys:
        item = store.read([key])[key]
        assert [e.rid for e in item.open] == [live.rid]
        assert from_nano(item.committed) == Decimal("0.1")
    # A request's own cap lives in its process, never in the table: nothing to sweep.
    assert store.read(["TASK#t#request#r-1"]) == {}
    assert budgets.sweep_expired(tenant_ids=["t"], agents=["triage"]).released == 0


def test_the_number_of_open_reservations_per_item_is_bounded() -> None:
    budgets, store, clock = ledger(budget_max_open_reservations=3)
    for _ in range(3):
        budgets.reserve(job(), "triage", Decimal("0.01"), deadline=Left(60))
    with pytest.raises(BudgetExceeded) as full:
        budgets.reserve(job(), "triage", Decimal("0.01"), deadline=Left(60))
    assert full.value.details["reason"] == "too_many_open_reservations"
    assert full.value.headers["Retry-After"] == "1"
    clock.now += 92  # all three expired: the refusal gives them back
    budgets.reserve(job(), "triage", Decimal("0.01"), deadline=Left(60))
    assert len(store.read([TASK])[TASK].open) == 1


def test_a_jobs_cap_is_the_limit_of_its_task_scope() -> None:
    budgets, _, _ = ledger()
    (task,) = budgets.scopes(job(Decimal("0.25")), "triage")
    assert (task.name, task.key, task.limit) == ("task", TASK, Decimal("0.25"))
    (task,) = budgets.scopes(job(Decimal("5")), "triage")
    assert task.limit == Decimal("1")  # the per-task cap is lower
    assert len({job(Decimal("0.25")), job(Decimal("0.25"))}) == 1  # still hashable
    unbounded, _, _ = ledger(budget_task_usd=None)
    (task,) = unbounded.scopes(job(Decimal("0.25")), "triage")
    assert task.limit == Decimal("0.25")
    assert unbounded.scopes(job(), "triage") == []


def test_a_refusal_at_the_jobs_own_cap_is_job_budget_exceeded() -> None:
    budgets, _, _ = ledger()
    held = budgets.reserve(job(Decimal("0.25")), "triage", Decimal("0.2"))
    budgets.settle(
        held,
        Decimal("0.15"),
        scope=job(Decimal("0.25")),
        agent="triage",
        model="gpt-5-mini",
        usage=USAGE,
    )
    with pytest.raises(JobBudgetExceeded) as caught:
        budgets.reserve(job(Decimal("0.25"), step="research-2"), "triage", Decimal("0.2"))
    assert caught.value.code == "job_budget_exceeded"
    assert caught.value.details == {
        "max_cost_usd": 0.25,
        "cost_usd": 0.15,
        "step": "research-2",
    }
    # Above the per-task cap, the job's cap is not what refuses: budget_exceeded.
    with pytest.raises(BudgetExceeded) as task:
        budgets.reserve(job(Decimal("5")), "triage", Decimal("0.9"))
    assert not isinstance(task.value, JobBudgetExceeded)
    assert task.value.details["scope"] == "task"


def test_closing_a_finished_job_gives_back_what_its_dead_attempts_held() -> None:
    budgets, store, clock = ledger()
    budgets.reserve(job(), "triage", Decimal("0.4"), deadline=Left(60))  # its worker died
    clock.now += 5  # the retry runs before the dead entry expires, and succeeds
    retry = budgets.reserve(job(), "triage", Decimal("0.4"), deadline=Left(60))
    budgets.settle(
        retry, Decimal("0.1"), scope=job(), agent="triage", model="gpt-5-mini", usage=USAGE
    )
    assert from_nano(store.read([TASK])[TASK].committed) == Decimal("0.5")  # 0.4 still held
    report = budgets.close_task(job())
    assert (report.released, report.released_usd) == (1, Decimal("0.4"))
    item = store.read([TASK])[TASK]
    assert item == BudgetItem(
        committed=to_nano(Decimal("0.1")), spent=to_nano(Decimal("0.1")), closed=True
    )
    assert budgets.close_task(job()).released == 0


def test_an_attempt_that_reserves_after_its_job_finished_is_refused_and_holds_nothing() -> None:
    # A stale attempt (its lease ran out, another attempt finished the job) that starts a
    # step after the close could otherwise leave an entry no sweep ever looks at.
    budgets, store, _ = ledger()
    budgets.close_task(job())
    with pytest.raises(JobAlreadyFinished):
        budgets.reserve(job(), "triage", Decimal("0.4"), deadline=Left(60))
    item = store.read([TASK])[TASK]
    assert (item.committed, item.open, item.closed) == (0, (), True)
    # Other scopes the refused call had reserved on are given back too.
    for key, other in store.read(budgets.period_keys(["t"], ["triage"])).items():
        assert other.open == (), key

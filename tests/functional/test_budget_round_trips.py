"""Budgets cost one DynamoDB round trip before a model call and one after, on moto.

Measured from botocore (``bench.roundtrips``) with 5 ms injected into every request,
so that requests issued together overlap; the stack's tables, default limits (task,
tenant day, tenant month) unless a test says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.roundtrips import recording
from stratus.agents import CallScope
from stratus.budgets import BudgetLedger
from stratus.config import Settings
from stratus.ddb import Table
from stratus.errors import BudgetExceeded
from stratus.gateway_stores.dynamo import DynamoBudgetStore
from stratus.gateway_stores.memory import MemoryAlerts
from stratus.rollups import UsageRollups
from stratus.usage import Usage
from tests.tables import create_tables

LATENCY_S = 0.05  # long enough that calls issued together overlap on a loaded machine
SCOPE = CallScope("tenant-a", "triage", "request", "r-1")
USAGE = Usage(input_tokens=900, cached_input_tokens=512, output_tokens=80, reasoning_tokens=20)


@pytest.fixture
def tables(aws_credentials: None) -> Iterator[dict[str, Any]]:
    with mock_aws():
        client = boto3.client("dynamodb")
        yield {"client": client, "names": create_tables(client)}


def ledger(tables: dict[str, Any], **overrides: Any) -> BudgetLedger:
    table = Table(tables["names"]["budgets"], tables["client"])
    budgets = BudgetLedger(Settings(**overrides), DynamoBudgetStore(table), alerts=MemoryAlerts())
    budgets.tenant_limits(SCOPE.tenant_id)  # cached a minute: warm, as in a busy process
    return budgets


def settle(budgets: BudgetLedger, held: Any) -> None:
    budgets.settle(
        held, Decimal("0.0012"), scope=SCOPE, agent="triage", model="gpt-5-mini", usage=USAGE
    )


def test_reserving_on_three_scopes_is_one_round_trip(tables: dict[str, Any]) -> None:
    budgets = ledger(tables)
    with recording(latency_s=LATENCY_S) as trace:
        held = budgets.reserve(SCOPE, "triage", Decimal("0.05"))
    assert [b.name for b in held.scopes] == ["task", "tenant_day", "tenant_month"]
    # A synchronous request's own cap (task) is kept in its process: two table writes.
    assert trace.requests("dynamodb") == 2, trace.describe("dynamodb")
    assert trace.round_trips("dynamodb") == 1, trace.describe("dynamodb")
    assert {c.operation for c in trace.of("dynamodb")} == {"UpdateItem"}


def test_settling_three_scopes_with_usage_is_one_round_trip(tables: dict[str, Any]) -> None:
    budgets = ledger(tables)
    held = budgets.reserve(SCOPE, "triage", Decimal("0.05"))
    with recording(latency_s=LATENCY_S) as trace:
        settle(budgets, held)
    # The tenant day and month settlements, and the agent's day (no limit on it) carrying
    # its model's usage; the request's own cap settles in the process.
    assert trace.requests("dynamodb") == 3, trace.describe("dynamodb")
    assert trace.round_trips("dynamodb") == 1, trace.describe("dynamodb")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    rollups = UsageRollups(Settings(), None, budgets=budgets)
    with recording(latency_s=LATENCY_S) as read:
        report = rollups.tenant_usage("tenant-a", "day")
    assert read.requests("dynamodb") == 1
    assert report["key"] == day and report["cost_usd"] == "0.0012"
    assert report["agents"]["triage"]["cached_input_tokens"] == 512
    assert budgets.usage(f"AGENT#triage#DAY#{day}")["gpt-5-mini"]["calls"] == 1


def test_with_every_carrier_limited_the_settlement_is_one_write_per_scope(
    tables: dict[str, Any],
) -> None:
    budgets = ledger(tables, budget_agent_daily_usd=Decimal("20"))
    with recording(latency_s=LATENCY_S) as reserving:
        held = budgets.reserve(SCOPE, "triage", Decimal("0.05"))
    assert len(held.scopes) == 4
    assert (reserving.requests("dynamodb"), reserving.round_trips("dynamodb")) == (3, 1)
    with recording(latency_s=LATENCY_S) as settling:
        settle(budgets, held)
    assert (settling.requests("dynamodb"), settling.round_trips("dynamodb")) == (3, 1)


def test_a_refusal_costs_one_more_round_trip_that_gives_the_others_back(
    tables: dict[str, Any],
) -> None:
    budgets = ledger(tables, budget_tenant_monthly_usd=Decimal("0.08"))
    budgets.reserve(CallScope("tenant-a", "triage", "request", "r-0"), "triage", Decimal("0.05"))
    with recording(latency_s=LATENCY_S) as trace, pytest.raises(BudgetExceeded) as refused:
        budgets.reserve(SCOPE, "triage", Decimal("0.05"))
    assert refused.value.details["scope"] == "tenant_month"
    # The reservations, then the day's give-back with the 100% alert marker (the task's
    # give-back is in the process).
    assert trace.round_trips("dynamodb") == 2, trace.describe("dynamodb")
    assert trace.requests("dynamodb") == 4, trace.describe("dynamodb")


def test_a_replay_is_counted_in_one_round_trip(tables: dict[str, Any]) -> None:
    budgets = ledger(tables)
    with recording(latency_s=LATENCY_S) as trace:
        budgets.record_unpaid(scope=SCOPE, agent="triage", model="gpt-5-mini", ledger_hit=True)
    assert (trace.requests("dynamodb"), trace.round_trips("dynamodb")) == (3, 1)

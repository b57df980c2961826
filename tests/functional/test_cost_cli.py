"""``stratus cost`` on moto: the figures are the usage real settlements put on the budget
items (reserve + settle through the runtime's own ledger), by agent, model and day."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from infra import cli
from infra.cost_cli import sparkline
from stratus.agents import CallScope
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.usage import Usage

TODAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def _spend(
    when: datetime, tenant: str, agent: str, model: str, cost: str, tokens: tuple[int, ...]
) -> None:
    """One paid model call, as the gateway records it (reserve, then settle)."""
    budgets = Runtime(Settings(), clock=lambda: when.timestamp()).budgets
    scope = CallScope(tenant, agent, "request", f"r-{time.monotonic_ns()}")
    reservation = budgets.reserve(scope, agent, Decimal("0.5"))
    inp, cached, out, reasoning = tokens
    usage = Usage(
        input_tokens=inp,
        cached_input_tokens=cached,
        output_tokens=out,
        reasoning_tokens=reasoning,
    )
    budgets.settle(reservation, Decimal(cost), scope=scope, agent=agent, model=model, usage=usage)


@pytest.fixture
def spent(cloud: dict[str, Any]) -> dict[str, Any]:
    yesterday = TODAY - timedelta(days=1)
    _spend(TODAY, "tenant-a", "triage", "gpt-5-mini", "0.0015", (100, 20, 50, 10))
    _spend(TODAY, "tenant-a", "triage", "gpt-5", "0.0040", (200, 0, 80, 30))
    _spend(TODAY, "tenant-b", "triage", "gpt-5-mini", "0.0005", (40, 0, 10, 0))
    _spend(yesterday, "tenant-a", "returns", "gpt-5", "0.0100", (300, 0, 100, 50))
    _spend(TODAY - timedelta(days=9), "tenant-a", "triage", "gpt-5", "1.0", (1, 0, 1, 0))
    return cloud


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main(["cost", *argv, "--json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_cost_by_agent_model_and_day(
    spent: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    table = spent["tables"]["budgets"]
    report = _json(capsys, "--table", table)
    assert report["table"] == table
    assert len(report["days"]) == 7 and report["days"][-1] == TODAY.date().isoformat()
    # The call 9 days ago is outside the default 7 days.
    assert Decimal(report["cost_usd"]) == Decimal("0.0160")
    rows = {(r["day"], r["agent"], r["model"]): r for r in report["rows"]}
    today, yesterday = TODAY.date().isoformat(), (TODAY - timedelta(days=1)).date().isoformat()
    assert set(rows) == {
        (today, "triage", "gpt-5-mini"),
        (today, "triage", "gpt-5"),
        (yesterday, "returns", "gpt-5"),
    }
    mini = rows[(today, "triage", "gpt-5-mini")]  # two tenants, one model
    assert (mini["calls"], mini["input_tokens"], mini["cached_input_tokens"]) == (2, 140, 20)
    assert (mini["output_tokens"], mini["reasoning_tokens"]) == (60, 10)
    assert Decimal(mini["cost_usd"]) == Decimal("0.002")
    triage = report["agents"]["triage"]
    assert triage["calls"] == 3 and Decimal(triage["cost_usd"]) == Decimal("0.006")
    assert triage["daily_cost_usd"][-1] == pytest.approx(0.006)
    assert report["agents"]["returns"]["daily_cost_usd"][-2:] == [pytest.approx(0.01), 0.0]

    wider = _json(capsys, "--table", table, "--days", "10")
    assert Decimal(wider["cost_usd"]) == Decimal("1.0160")


def test_cost_of_one_tenant(spent: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, "--table", spent["tables"]["budgets"], "--tenant", "tenant-b")
    assert report["tenant_id"] == "tenant-b"
    assert [(r["agent"], r["model"], r["calls"]) for r in report["rows"]] == [("triage", "*", 1)]
    assert Decimal(report["cost_usd"]) == Decimal("0.0005")
    report = _json(capsys, "--table", spent["tables"]["budgets"], "--tenant", "tenant-a")
    assert Decimal(report["cost_usd"]) == Decimal("0.0155")
    assert set(report["agents"]) == {"triage", "returns"}


def test_cost_table_in_the_terminal(
    spent: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["cost", "--table", spent["tables"]["budgets"], "--days", "3"]) == 0
    out = capsys.readouterr().out
    assert "Stratus cost" in out and "3 days" in out
    triage = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("triage"))
    assert "$0.006000" in triage
    assert re.search(r"[▁▂▃▄▅▆▇█]", triage), triage  # the sparkline
    assert "gpt-5-mini" in out and "$0.016000" in out  # by model; the total


def test_cost_with_no_usage_and_bad_days(
    cloud: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["cost", "--table", cloud["tables"]["budgets"]]) == 0
    assert "No usage recorded" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--days"):
        cli.main(["cost", "--table", cloud["tables"]["budgets"], "--days", "0"])


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([0, 1, 2, 4]) == "·▃▅█"
    assert sparkline([0, 0]) == "··"
    assert sparkline([]) == ""

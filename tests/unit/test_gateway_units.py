"""Pure parts of the model gateway: token bound, chains, hashing, money, periods."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from infra.local.fake_model import _prompt_segments
from stratus.agents import CallScope
from stratus.budgets import _periods, from_nano, task_key, to_nano
from stratus.config import Settings
from stratus.ledger import call_key, request_hash
from stratus.tokens import estimate_prompt_tokens


def test_the_prompt_bound_is_never_below_the_fake_models_count() -> None:
    texts = [
        "hello",
        "Where is my order A-1001? " * 50,
        "Grüße aus Köln — naïve café",
        "数据" * 200,
        '{"order_id": "A-1", "items": [1, 2, 3]}',
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    for text in texts:
        messages = [{"role": "system", "content": "You help."}, {"role": "user", "content": text}]
        counted = sum(s.tokens for s in _prompt_segments(messages, tools))
        assert estimate_prompt_tokens(messages, tools) >= counted


def test_model_chains_and_downgrades() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.model_chain("fast") == ("gpt-5-mini", "gpt-4.1-mini")
    assert s.model_chain("smart") == ("gpt-5", "gpt-4.1")
    assert s.downgrade_chain("smart") == ("gpt-5-mini", "gpt-4.1-mini")
    assert s.downgrade_chain("fast") == ("gpt-5-nano", "gpt-4.1-mini")
    none = Settings(tier_fast_fallbacks=" , ")
    assert none.model_chain("fast") == ("gpt-5-mini",)


def test_request_hash_is_stable_and_order_insensitive() -> None:
    a = request_hash({"messages": [{"role": "user", "content": "x"}], "model": "fast"})
    b = request_hash({"model": "fast", "messages": [{"content": "x", "role": "user"}]})
    assert a == b and len(a) == 64
    assert a != request_hash({"model": "smart", "messages": [{"role": "user", "content": "x"}]})
    scope = CallScope("t", "triage", "job", "job-1", step="classify")
    assert call_key(scope, "classify:1", a) == f"CALL#t#job#job-1#classify:1#{a}"


def test_money_is_kept_in_exact_nano_usd() -> None:
    assert to_nano(Decimal("0.00000001")) == 10
    assert from_nano(3_772_000) == Decimal("0.003772")
    assert sum(from_nano(to_nano(Decimal("0.1"))) for _ in range(10)) == Decimal(1)


def test_periods_reset_at_utc_midnight_and_month_start() -> None:
    day, month, next_day, next_month = _periods(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert (day, month) == ("2026-12-31", "2026-12")
    assert next_day == datetime(2027, 1, 1, tzinfo=UTC) == next_month


def test_a_session_budgets_per_turn_a_job_per_job() -> None:
    turn = CallScope("t", "a", "session", "s-1", step="turn-3")
    job = CallScope("t", "a", "job", "j-1", step="classify")
    assert task_key(turn) == "TASK#t#session#s-1#turn-3"
    assert task_key(job) == "TASK#t#job#j-1"

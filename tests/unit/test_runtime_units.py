"""Unit tests of the runtime library's pure parts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from functions.agents import agent_names, load_agent, load_all
from stratus.agents import AgentSpec
from stratus.config import Settings
from stratus.errors import AgentNotFound, ConfigurationError
from stratus.keys import _parse_secret
from stratus.llm import retry_after_s
from stratus.prices import PriceTable, load_price_table
from stratus.tenants import bearer_token, hash_key, new_api_key
from stratus.usage import Usage

TABLE = PriceTable.model_validate(
    {
        "version": "t1",
        "models": {
            "m": {"input": "2.00", "cached_input": "0.50", "output": "8.00"},
            "m-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
        },
    }
)


def test_cost_bills_cached_input_at_its_own_rate_and_reasoning_once() -> None:
    usage = Usage(
        input_tokens=10_000, cached_input_tokens=4_000, output_tokens=2_000, reasoning_tokens=1_500
    )
    # 6,000 * 2.00 + 4,000 * 0.50 + 2,000 * 8.00 = 12,000 + 2,000 + 16,000 = 30,000 / 1e6
    assert TABLE.cost("m", usage) == Decimal("0.03000000")


def test_cost_of_many_small_calls_adds_up_exactly() -> None:
    one = TABLE.cost("m-mini", Usage(input_tokens=7, output_tokens=3))
    assert one == Decimal("0.00000760")
    assert sum((one for _ in range(1000)), Decimal(0)) == Decimal("0.00760000")


def test_dated_snapshots_are_priced_as_their_base_model() -> None:
    assert TABLE.price_for("m-mini-2025-08-07") == TABLE.models["m-mini"]
    assert TABLE.price_for("m-2025-01-01") == TABLE.models["m"]


def test_an_unknown_model_is_never_free() -> None:
    with pytest.raises(ConfigurationError, match="no price"):
        TABLE.cost("other", Usage(input_tokens=1))
    with pytest.raises(ConfigurationError):
        TABLE.price_for("mx")  # a prefix without the dash separator does not match


def test_bundled_price_table_covers_the_default_tiers() -> None:
    table = load_price_table()
    settings = Settings()
    table.price_for(settings.tier_fast)
    table.price_for(settings.tier_smart)
    for price in table.models.values():
        assert price.cached_input <= price.input


def test_bad_price_table_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"version": "x", "models": {"m": {"input": -1}}}')
    with pytest.raises(ConfigurationError, match="cannot load price table"):
        load_price_table(path)


def test_usage_from_openai_reads_details_and_clamps_nonsense() -> None:
    raw = SimpleNamespace(
        prompt_tokens=100,
        completion_tokens=20,
        prompt_tokens_details=SimpleNamespace(cached_tokens=300),
        completion_tokens_details=SimpleNamespace(reasoning_tokens=5),
    )
    assert Usage.from_openai(raw) == Usage(
        input_tokens=100, cached_input_tokens=100, output_tokens=20, reasoning_tokens=5
    )
    assert Usage.from_openai(None) == Usage()
    bare = SimpleNamespace(
        prompt_tokens=3,
        completion_tokens=4,
        prompt_tokens_details=None,
        completion_tokens_details=None,
    )
    assert Usage.from_openai(bare) == Usage(input_tokens=3, output_tokens=4)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        ({}, None),
        ({"retry-after": "-3"}, 0.0),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(SimpleNamespace(headers=headers)) == expected


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        ('{"api_keys": ["sk-1", "sk-2", " "]}', ["sk-1", "sk-2"]),
        ('{"api_key": "sk-9"}', ["sk-9"]),
        ("sk-plain", ["sk-plain"]),
        ("", []),
        ('{"api_keys": []}', []),
    ],
)
def test_secret_formats(raw: str, keys: list[str]) -> None:
    assert _parse_secret(raw) == keys


def test_secret_that_is_not_json_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        _parse_secret("{not json")


def test_settings_fail_loudly_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATUS_MAX_BODY_BYTES", "lots")
    with pytest.raises(ValidationError, match="max_body_bytes"):
        Settings()
    monkeypatch.setenv("STRATUS_MAX_BODY_BYTES", "0")
    with pytest.raises(ValidationError, match="max_body_bytes"):
        Settings()


def test_openai_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    settings = Settings()
    assert settings.openai_api_key == "sk-local"
    assert str(settings.openai_base_url) == "http://127.0.0.1:9999/v1"
    assert "sk-local" not in repr(settings)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
        ("Bearer " + "x" * 200, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_api_keys_are_random_and_hashed() -> None:
    a, b = new_api_key(), new_api_key()
    assert a != b and a.startswith("sk-stratus-") and len(a) == len(b)
    assert hash_key(a) != a and len(hash_key(a)) == 64


def test_registry_finds_the_example_agents() -> None:
    # Other areas add example agents too; these are the customer-support ones.
    assert {"order_status", "returns", "support", "triage"} <= set(agent_names())
    assert list(agent_names()) == sorted(agent_names())
    specs = load_all()
    assert specs["triage"].tier == "fast" and specs["returns"].tier == "smart"
    assert specs["order_status"].resources == frozenset({"orders_table"})
    with pytest.raises(AgentNotFound):
        load_agent("nope")


def test_agent_specs_are_validated(tmp_path: Path) -> None:
    (tmp_path / "v1.md").write_text("You help.")
    base = {"version": "1", "description": "d", "tier": "fast", "prompt_dir": tmp_path}
    assert AgentSpec(name="ok_agent", prompt_version="v1", **base).system_prompt == "You help."
    with pytest.raises(ValidationError, match="lower_snake_case"):
        AgentSpec(name="Bad-Name", prompt_version="v1", **base)
    with pytest.raises(ValidationError, match="does not exist"):
        AgentSpec(name="ok_agent", prompt_version="v2", **base)
    with pytest.raises(ValidationError, match=r"v1 or v2\.1"):
        AgentSpec(name="ok_agent", prompt_version="latest", **base)

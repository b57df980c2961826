"""Stage configuration: read from cdk.json, and bad values fail naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from infra.config import (
    STAGES_CONTEXT_KEY,
    StageConfigError,
    cdk_json_context,
    load_stage,
    parse_stage,
    stage_from_context,
)


def _stages() -> dict[str, Any]:
    return copy.deepcopy(cdk_json_context()[STAGES_CONTEXT_KEY])


def test_cdk_json_stages_are_valid() -> None:
    dev, prod = load_stage("dev"), load_stage("prod")
    assert (dev.removal_policy, dev.deletion_protection) == ("destroy", False)
    assert (prod.removal_policy, prod.deletion_protection) == ("retain", True)
    assert prod.retain and not dev.retain


def test_cdk_json_app_and_context() -> None:
    data = json.loads((Path(__file__).parents[2] / "cdk.json").read_text(encoding="utf-8"))
    assert data["app"] == ".venv/bin/python -m infra.app"
    assert "**/__pycache__" in data["watch"]["exclude"]


def test_stage_defaults_to_dev_and_follows_context() -> None:
    stages = _stages()
    context: dict[str, Any] = {STAGES_CONTEXT_KEY: stages}
    assert stage_from_context(context.get).name == "dev"
    context["stage"] = "prod"
    assert stage_from_context(context.get).name == "prod"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("log_retention_days", 13, "log_retention_days"),
        ("api_throttle_rate", 0, "api_throttle_rate"),
        ("api_throttle_burst", "lots", "api_throttle_burst"),
        ("removal_policy", "keep", "removal_policy"),
        ("max_body_bytes", 64 * 1024 * 1024, "max_body_bytes"),
        ("tier_fast", "", "tier_fast"),
        ("account", "1234", "account"),
        ("surprise", True, "surprise"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any, fragment: str) -> None:
    stages = _stages()
    stages["dev"][field] = value
    with pytest.raises(StageConfigError, match=fragment):
        parse_stage("dev", stages)


def test_missing_field_is_named() -> None:
    stages = _stages()
    del stages["prod"]["idempotency_ttl_s"]
    with pytest.raises(StageConfigError, match=r"prod.*idempotency_ttl_s"):
        parse_stage("prod", stages)


def test_contradictions_are_rejected() -> None:
    stages = _stages()
    stages["dev"]["deletion_protection"] = True
    with pytest.raises(StageConfigError, match="deletion_protection"):
        parse_stage("dev", stages)


def test_unknown_stage_lists_the_known_ones() -> None:
    with pytest.raises(StageConfigError, match=r"unknown stage 'qa'.*dev, prod"):
        parse_stage("qa", _stages())


def test_missing_stages_block() -> None:
    with pytest.raises(StageConfigError, match=STAGES_CONTEXT_KEY):
        stage_from_context(lambda key: None)

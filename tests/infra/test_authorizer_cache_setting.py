"""``authorizer_cache_s``: a stage setting (the revocation window), bounded like API Gateway's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import STAGES_CONTEXT_KEY, StageConfigError, load_stage, parse_stage
from infra.paths import CDK_JSON


def _stages() -> dict[str, Any]:
    stages: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"][STAGES_CONTEXT_KEY]
    return stages


def test_every_stage_caches_authorizer_decisions_for_60_s() -> None:
    assert load_stage("dev").authorizer_cache_s == load_stage("prod").authorizer_cache_s == 60


@pytest.mark.parametrize("value", [0, 5, 3600])
def test_a_stage_may_choose_its_window(value: int) -> None:
    stages = _stages()
    stages["dev"]["authorizer_cache_s"] = value
    assert parse_stage("dev", stages).authorizer_cache_s == value


@pytest.mark.parametrize("value", [-1, 3601, "soon"])
def test_out_of_range_windows_are_refused(value: object) -> None:
    stages = _stages()
    stages["dev"]["authorizer_cache_s"] = value
    with pytest.raises(StageConfigError, match="authorizer_cache_s"):
        parse_stage("dev", stages)

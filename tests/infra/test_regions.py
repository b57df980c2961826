"""A stage listing regions synthesizes one self-contained stack per region (docs/regions.md).

The session's one regional synthesis (``regional_staging``: staging in two regions, one
agent, cdk-nag on): each stack is pinned to its region, owns its tables and queues, and
references nothing of the other.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import StageConfigError, load_stage, parse_stage
from infra.topology import gateway_error
from tests.infra.conftest import REGIONS, RegionalSynth


@pytest.fixture(scope="module")
def regional(regional_staging: RegionalSynth) -> dict[str, dict[str, Any]]:
    return {
        name: {"template": template, "region": regional_staging.regions[name]}
        for name, template in regional_staging.templates.items()
    }


def _of_type(template: dict[str, Any], type_: str) -> dict[str, Any]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


def test_one_stack_per_region_each_pinned(regional: dict[str, dict[str, Any]]) -> None:
    assert {name: t["region"] for name, t in regional.items()} == {
        f"Stratus-staging-{region}": region for region in REGIONS
    }


def test_every_region_owns_its_data_and_nothing_is_global(
    regional: dict[str, dict[str, Any]],
) -> None:
    for name, entry in regional.items():
        template = entry["template"]
        assert _of_type(template, "AWS::DynamoDB::Table"), name
        assert _of_type(template, "AWS::SQS::Queue"), name
        # No global tables (replicas in other regions), no cross-stack references.
        assert not _of_type(template, "AWS::DynamoDB::GlobalTable"), name
        text = json.dumps(template)
        assert "Fn::ImportValue" not in text, name
        other = next(r for r in REGIONS if r != entry["region"])
        assert f'"{other}"' not in text, f"{name} names {other}"
        # The dashboard (account-global) is named per region so the deploys do not clash.
        (dashboard,) = _of_type(template, "AWS::CloudWatch::Dashboard").values()
        assert dashboard["Properties"]["DashboardName"] == f"Stratus-staging-{entry['region']}"


def test_the_access_denied_response_is_the_wrong_region_error(
    regional: dict[str, dict[str, Any]],
) -> None:
    for entry in regional.values():
        responses = {
            r["Properties"]["ResponseType"]: r["Properties"]
            for r in _of_type(entry["template"], "AWS::ApiGateway::GatewayResponse").values()
        }
        denied = responses["ACCESS_DENIED"]
        assert denied["StatusCode"] == "403"
        template = denied["ResponseTemplates"]["application/json"]
        assert template == gateway_error("ACCESS_DENIED").template()
        rendered = template.replace("$context.requestId", "req-1").replace(
            "$context.authorizer.home_region", "eu-west-1"
        )
        error = json.loads(rendered)["error"]
        assert (error["code"], error["request_id"]) == ("wrong_region", "req-1")
        assert error["details"] == {"home_region": "eu-west-1"}


@pytest.mark.parametrize(
    ("regions", "problem"),
    [(["eu-west-1", "eu-west-1"], "unique"), (["europe"], "not AWS region names")],
)
def test_bad_region_lists_are_refused(regions: list[str], problem: str) -> None:
    raw = {**load_stage("dev").model_dump(exclude={"name"}), "regions": regions}
    with pytest.raises(StageConfigError, match=problem):
        parse_stage("dev", {"dev": raw})


def test_regions_and_region_are_exclusive_and_account_may_pin_them() -> None:
    raw = load_stage("dev").model_dump(exclude={"name"})
    with pytest.raises(StageConfigError, match="not both"):
        parse_stage("dev", {"dev": {**raw, "regions": ["eu-west-1"], "region": "eu-west-1"}})
    pinned = parse_stage("dev", {"dev": {**raw, "regions": ["eu-west-1"], "account": "1" * 12}})
    assert pinned.in_region("eu-west-1").region == "eu-west-1"
    with pytest.raises(ValueError, match="not one of"):
        pinned.in_region("us-east-1")

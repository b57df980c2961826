"""Residency: the authorizer refuses a key homed in another region, with no lookup (moto)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from functions.handlers import authorizer
from infra import cli
from stratus.tenant_keys import key_region
from stratus.tenants import TenantStore
from tests.conftest import reset_process_state
from tests.functional.test_authorizer_and_tenants import authorizer_event
from tests.support import FakeLambdaContext


def test_a_key_of_this_region_is_allowed_with_tier_and_home_region(cloud: dict[str, Any]) -> None:
    _, key = TenantStore(cloud["tables"]["tenants"]).create(
        "acme", tier="enterprise", home_region="eu-west-1"
    )
    policy = authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), FakeLambdaContext())
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert policy["context"]["tier"] == "enterprise"
    assert policy["context"]["home_region"] == "eu-west-1"


def test_a_key_of_another_region_is_denied_as_wrong_region_without_a_read(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A US tenant's key, presented to this (eu-west-1) region: the table is never read.
    store = TenantStore(cloud["tables"]["tenants"])
    _, key = store.create("us-co", home_region="us-east-1")
    boto3.client("dynamodb").delete_table(TableName=cloud["tables"]["tenants"])
    policy = authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), FakeLambdaContext())
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert policy["context"] == {"error_code": "wrong_region", "home_region": "us-east-1"}
    assert policy["principalId"] == "wrong_region"


def test_the_same_key_is_allowed_in_its_home_region(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = TenantStore(cloud["tables"]["tenants"]).create("us-co", home_region="us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # this function now serves us-east-1
    reset_process_state()
    policy = authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), FakeLambdaContext())
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"


def test_legacy_keys_without_a_region_still_work(cloud: dict[str, Any]) -> None:
    _, key = TenantStore(cloud["tables"]["tenants"]).create("old")
    assert key_region(key) is None
    policy = authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), FakeLambdaContext())
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert policy["context"]["tier"] == "standard" and policy["context"]["home_region"] == ""


def test_cli_tier_and_set_tier_reach_every_key(
    cloud: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    table = cloud["tables"]["tenants"]
    argv = ["tenant", "create", "--name", "acme", "--table", table, "--tier", "free"]
    assert cli.main([*argv, "--home-region", "eu-west-1", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert (created["tier"], created["home_region"]) == ("free", "eu-west-1")
    assert created["api_key"].startswith("sk-stratus-eu-west-1_")
    store = TenantStore(table)
    store.create_key(created["tenant_id"], ["invoke"])
    set_tier = ["tenant", "set-tier", "--tenant", created["tenant_id"], "--table", table]
    assert cli.main([*set_tier, "--tier", "enterprise", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keys"] == 2
    assert store.authenticate(created["api_key"]).tier == "enterprise"  # type: ignore[union-attr]
    tenant_item = boto3.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"TENANT#{created['tenant_id']}"}}
    )["Item"]
    assert tenant_item["tier"] == {"S": "enterprise"}
    assert cli.main([*set_tier, "--tier", "enterprise"]) == 0  # idempotent
    assert (
        cli.main(["tenant", "set-tier", "--tenant", "nope", "--table", table, "--tier", "free"])
        == 1
    )

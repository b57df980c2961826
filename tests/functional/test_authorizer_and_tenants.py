"""Tenants, API keys and the Lambda REQUEST authorizer, against moto."""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import pytest

from functions.handlers import authorizer
from infra import cli
from stratus.tenants import TenantStore, hash_key
from tests.support import FakeLambdaContext, load_event


def authorizer_event(authorization: str | None) -> dict[str, Any]:
    event = copy.deepcopy(load_event("authorizer/request.json"))
    event["headers"].pop("Authorization", None)
    event["multiValueHeaders"].pop("Authorization", None)
    if authorization is not None:
        event["headers"]["authorization"] = authorization
        event["multiValueHeaders"]["authorization"] = [authorization]
    return event


def test_cli_creates_a_tenant_whose_key_authorizes(
    cloud: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    table = cloud["tables"]["tenants"]
    assert cli.main(["tenant", "create", "--name", "acme", "--table", table, "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    key = created["api_key"]

    policy = authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), FakeLambdaContext())
    assert policy["principalId"] == created["tenant_id"]
    assert policy["context"]["tenant_id"] == created["tenant_id"]
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == ["arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/*/*"]

    # Only the hash is stored: the key appears nowhere in the table.
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    assert key not in json.dumps(items)
    assert {"S": f"KEY#{hash_key(key)}"} in [item["pk"] for item in items]


def test_cli_reads_the_table_from_the_environment(
    cloud: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["tenant", "create", "--name", "globex"]) == 0
    out = capsys.readouterr()
    assert "api_key:   sk-stratus-" in out.out
    assert "shown once" in out.err


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer sk-stratus-wrong",
        "Bearer " + "sk-stratus-" + "x" * 43,
        "Bearer " + "y" * 5000,
    ],
)
def test_missing_or_bad_keys_are_unauthorized(cloud: dict[str, Any], header: str | None) -> None:
    TenantStore(cloud["tables"]["tenants"]).create("acme")
    with pytest.raises(authorizer.UnauthorizedError, match=r"^Unauthorized$"):
        authorizer.lambda_handler(authorizer_event(header), FakeLambdaContext())


def test_a_disabled_key_is_unauthorized(cloud: dict[str, Any]) -> None:
    table = cloud["tables"]["tenants"]
    _, key = TenantStore(table).create("acme")
    boto3.resource("dynamodb").Table(table).update_item(
        Key={"pk": f"KEY#{hash_key(key)}"},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": "revoked"},
    )
    with pytest.raises(authorizer.UnauthorizedError):
        authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), FakeLambdaContext())


def test_tenants_get_distinct_ids_and_keys(cloud: dict[str, Any]) -> None:
    store = TenantStore(cloud["tables"]["tenants"])
    (a, key_a), (b, key_b) = store.create("a"), store.create("b")
    assert a.tenant_id != b.tenant_id and key_a != key_b
    assert store.authenticate(key_a).tenant_id == a.tenant_id  # type: ignore[union-attr]
    assert store.authenticate(key_b).tenant_id == b.tenant_id  # type: ignore[union-attr]

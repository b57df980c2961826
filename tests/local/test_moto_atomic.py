"""The local cloud's moto patches: atomic requests, and a cancelled transaction that
puts back exactly what it touched (item backups instead of whole-table copies)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.local import moto_atomic

TABLE = "atomic-test"


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        moto_atomic.install()
        try:
            ddb = boto3.client("dynamodb", region_name="us-east-1")
            ddb.create_table(
                TableName=TABLE,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            yield ddb
        finally:
            moto_atomic.uninstall()


def key(pk: str, sk: str = "A") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def item(client: Any, pk: str, sk: str = "A") -> dict[str, Any] | None:
    found: dict[str, Any] | None = client.get_item(TableName=TABLE, Key=key(pk, sk)).get("Item")
    return found


def put(client: Any, pk: str, n: int, sk: str = "A") -> None:
    client.put_item(TableName=TABLE, Item={**key(pk, sk), "n": {"N": str(n)}})


def test_a_cancelled_transaction_puts_back_every_item_it_touched(client: Any) -> None:
    put(client, "updated", 1)
    put(client, "deleted", 2)
    put(client, "bystander", 3)
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": key("updated"),
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {"Delete": {"TableName": TABLE, "Key": key("deleted")}},
                {"Put": {"TableName": TABLE, "Item": {**key("created"), "n": {"N": "9"}}}},
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": key("bystander"),
                        "ConditionExpression": "n = :zero",
                        "ExpressionAttributeValues": {":zero": {"N": "0"}},
                    }
                },
            ]
        )
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert item(client, "updated") == {**key("updated"), "n": {"N": "1"}}
    assert item(client, "deleted") == {**key("deleted"), "n": {"N": "2"}}
    assert item(client, "created") is None
    assert item(client, "bystander") == {**key("bystander"), "n": {"N": "3"}}


def test_a_committed_transaction_writes_everything(client: Any) -> None:
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": TABLE, "Item": {**key("x"), "n": {"N": "1"}}}},
            {"Put": {"TableName": TABLE, "Item": {**key("y"), "n": {"N": "2"}}}},
        ]
    )
    assert item(client, "x") is not None and item(client, "y") is not None


def test_uninstall_restores_moto() -> None:
    import moto.dynamodb.models as models
    from moto import backends

    before = (
        models.copy,
        models.DynamoDBBackend.transact_write_items,
        backends.list_of_moto_modules,
    )
    moto_atomic.install()
    assert models.DynamoDBBackend.transact_write_items is not before[1]
    moto_atomic.uninstall()
    after = (
        models.copy,
        models.DynamoDBBackend.transact_write_items,
        backends.list_of_moto_modules,
    )
    assert after == before

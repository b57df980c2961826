"""``stratus.ddb.Table``, the one DynamoDB access style, against moto."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import boto3
import pytest
from moto import mock_aws

from stratus import ddb


@pytest.fixture
def table(aws_credentials: None) -> Iterator[ddb.Table]:
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="t",
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
        yield ddb.Table("t", client)


def test_plain_values_round_trip(table: ddb.Table) -> None:
    table.put({"pk": "a", "sk": "1", "n": 1.5, "s": "x", "l": [1, {"d": 0.25}], "none": None})
    item = table.get({"pk": "a", "sk": "1"})
    assert item == {
        "pk": "a",
        "sk": "1",
        "n": Decimal("1.5"),
        "s": "x",
        "l": [1, {"d": Decimal("0.25")}],
    }
    assert table.get({"pk": "a", "sk": "missing"}) is None


def test_a_condition_that_does_not_hold_raises_condition_failed(table: ddb.Table) -> None:
    table.put({"pk": "a", "sk": "1", "v": 1}, condition="attribute_not_exists(pk)")
    with pytest.raises(ddb.ConditionFailed) as failed:
        table.put(
            {"pk": "a", "sk": "1", "v": 2},
            condition="attribute_not_exists(pk)",
            return_old_on_failure=True,
        )
    assert failed.value.item is not None and failed.value.item["v"] == 1
    with pytest.raises(ddb.ConditionFailed):
        table.update(
            {"pk": "a", "sk": "1"}, "SET v = :v", condition="v = :old", values={":v": 3, ":old": 9}
        )
    with pytest.raises(ddb.ConditionFailed):
        table.delete({"pk": "a", "sk": "1"}, condition="v = :old", values={":old": 9})
    assert table.get({"pk": "a", "sk": "1"})["v"] == 1  # type: ignore[index]


def test_update_returns_the_new_attributes(table: ddb.Table) -> None:
    new = table.update({"pk": "a", "sk": "1"}, "ADD n :d", values={":d": 2})
    assert new["n"] == 2
    assert table.update({"pk": "a", "sk": "1"}, "ADD n :d", values={":d": 2}, returns="NONE") == {}


def test_a_cancelled_transaction_names_the_item_that_failed(table: ddb.Table) -> None:
    table.put({"pk": "a", "sk": "1"})
    transaction = ddb.Transaction()
    transaction.add(table.put_op({"pk": "b", "sk": "1"}, condition="attribute_not_exists(pk)"))
    index = transaction.add(table.check_op({"pk": "a", "sk": "1"}, "attribute_not_exists(pk)"))
    with pytest.raises(ddb.TransactionCancelled) as cancelled:
        table.transact(transaction)
    assert cancelled.value.condition_failed_at(index)
    assert not cancelled.value.condition_failed_at(0)
    assert cancelled.value.any_condition_failed
    assert table.get({"pk": "b", "sk": "1"}) is None  # nothing of it was written


def test_queries_page_and_batches_read_and_delete(table: ddb.Table) -> None:
    keys = [{"pk": "p", "sk": f"{i:03d}"} for i in range(30)]
    for key in keys:
        table.put({**key, "v": 1})
    page = table.query("pk = :p", values={":p": "p"}, limit=10)
    assert [i["sk"] for i in page.items] == [f"{i:03d}" for i in range(10)]
    assert page.last_key == {"pk": "p", "sk": "009"}
    assert len(list(table.query_all("pk = :p", values={":p": "p"}, limit=7))) == 30
    assert len(table.batch_get(keys[:5])) == 5
    table.batch_delete(keys)
    assert table.query("pk = :p", values={":p": "p"}).items == []

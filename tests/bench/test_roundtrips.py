"""The round-trip counter the bench and the hot-path tests rely on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
from moto import mock_aws

from bench.roundtrips import recording


def _client() -> object:
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return client


def _get(client: object, n: int) -> None:
    client.get_item(TableName="t", Key={"pk": {"S": str(n)}})  # type: ignore[attr-defined]


def test_sequential_calls_are_one_round_trip_each() -> None:
    with mock_aws():
        client = _client()
        with recording(latency_s=0.005) as trace:
            for n in range(3):
                _get(client, n)
    assert trace.requests() == 3
    assert trace.round_trips() == 3
    assert trace.describe() == ["1: GetItem(t)", "2: GetItem(t)", "3: GetItem(t)"]


def test_concurrent_calls_count_once() -> None:
    with mock_aws():
        client = _client()
        with ThreadPoolExecutor(4) as pool, recording(latency_s=0.02) as trace:
            list(pool.map(lambda n: _get(client, n), range(4)))
            _get(client, 9)
    assert trace.requests() == 5
    assert trace.round_trips() == 2
    assert trace.round_trips("sqs") == 0


def test_transactions_and_batches_name_their_tables() -> None:
    from bench.roundtrips import tables_of

    assert tables_of({"TableName": "a"}) == "a"
    assert (
        tables_of(
            {
                "TransactItems": [
                    {"Put": {"TableName": "s-sessions", "Item": {}}},
                    {"Update": {"TableName": "s-sessions", "Key": {}}},
                    {"ConditionCheck": {"TableName": "s-jobs", "Key": {}}},
                ]
            }
        )
        == "s-sessions,s-jobs"
    )
    assert tables_of({"RequestItems": {"s-sessions": {}, "s-usage": {}}}) == "s-sessions,s-usage"
    assert tables_of(None) == ""

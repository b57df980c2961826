"""The streams table port (issue 17): the DynamoDB adapter (on moto) and the fake agree."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from stratus.ddb import Table
from stratus.streaming import MemoryStreamStore, StreamCaller, StreamStore
from stratus.streaming.dynamo import DynamoStreamStore
from tests.tables import create_tables

NOW = 1_764_614_400.0
CALLER = StreamCaller("tenant-a", "key_1", ("invoke", "sessions"), "agent", "cust-1")


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[StreamStore]:
    if request.param == "memory":
        yield MemoryStreamStore()
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        yield DynamoStreamStore(Table(create_tables(client)["streams"], client))


def test_connections_keep_their_caller_until_disconnect(store: StreamStore) -> None:
    store.put_connection("c1", CALLER, NOW)
    store.put_connection("c2", StreamCaller("tenant-b"), NOW)
    assert store.get_connection("c1") == CALLER
    assert store.get_connection("c2") == StreamCaller("tenant-b")
    store.delete_connection("c1")
    assert store.get_connection("c1") is None
    store.delete_connection("c1")  # twice: no error
    assert store.get_connection("nobody") is None


def test_a_ticket_is_taken_once_and_not_after_it_expired(store: StreamStore) -> None:
    store.put_ticket("h1", CALLER, int(NOW) + 60)
    store.put_ticket("h2", CALLER, int(NOW) + 60)
    assert store.take_ticket("h1", NOW) == CALLER
    assert store.take_ticket("h1", NOW) is None
    assert store.take_ticket("h2", NOW + 60) is None  # expired, TTL not swept yet
    assert store.take_ticket("unknown", NOW) is None


def test_a_client_id_is_claimed_once_then_answers_its_final_frame(store: StreamStore) -> None:
    key = "FRAME#tenant-a#triage#c1"
    assert store.claim(key, NOW, 900).status == "new"
    assert store.claim(key, NOW + 1, 900).status == "running"
    frame = {"type": "done", "id": "c1", "output": {"a": [1, 2.5]}, "cost_usd": 0.00012275}
    store.finish(key, frame, NOW + 2)
    claim = store.claim(key, NOW + 3, 900)
    assert claim.status == "done"
    assert claim.frame == frame  # exactly (no Decimals back)
    store.release(key)  # a finished request keeps its final frame
    assert store.claim(key, NOW + 4, 900).status == "done"


def test_a_dead_runs_claim_is_taken_over_after_its_lease(store: StreamStore) -> None:
    key = "FRAME#tenant-a#triage#c2"
    assert store.claim(key, NOW, 900).status == "new"
    assert store.claim(key, NOW + 899, 900).status == "running"
    assert store.claim(key, NOW + 900, 900).status == "new"


def test_a_released_claim_can_run_again(store: StreamStore) -> None:
    key = "FRAME#tenant-a#triage#c3"
    assert store.claim(key, NOW, 900).status == "new"
    store.release(key)
    assert store.claim(key, NOW, 900).status == "new"


def test_a_final_frame_expires_after_a_day(store: StreamStore) -> None:
    key = "FRAME#tenant-a#triage#c4"
    store.claim(key, NOW, 900)
    store.finish(key, {"type": "done", "id": "c4"}, NOW)
    assert store.claim(key, NOW + 24 * 3600, 900).status == "new"

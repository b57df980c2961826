"""The audit store port: the DynamoDB adapter (on moto) and the in-memory fake agree."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from stratus.audit import AuditEvent, AuditStore, MemoryAuditStore, new_event_id
from stratus.audit_dynamo import DynamoAuditStore
from stratus.ddb import Table
from tests.tables import create_tables

T0 = 1_800_000_000.0


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[AuditStore]:
    if request.param == "memory":
        yield MemoryAuditStore()
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        yield DynamoAuditStore(Table(create_tables(client)["audit"], client), retention_days=7)


def event(n: int, *, tenant: str = "t1", type: str = "tool.executed") -> AuditEvent:
    at = T0 + n
    return AuditEvent(
        tenant_id=tenant,
        type=type,
        at=at,
        actor=f"key_{n}",
        request_id=f"req-{n}",
        details={"n": n, "ratio": 0.5, "tool": "lookup_order", "nested": {"ok": True}},
        event_id=new_event_id(at),
    )


def test_events_come_back_whole_oldest_first_and_only_in_their_tenant(store: AuditStore) -> None:
    store.put_events([event(2), event(1, tenant="t2"), event(0)])
    got, cursor = store.events("t1")
    assert cursor is None
    assert got == [event_like(got[0], 0), event_like(got[1], 2)]
    assert got[0].details == {"n": 0, "ratio": 0.5, "tool": "lookup_order", "nested": {"ok": True}}
    assert [e.actor for e in got] == ["key_0", "key_2"] and got[0].request_id == "req-0"
    assert [e.tenant_id for e in store.events("t2")[0]] == ["t2"]
    assert store.events("t3") == ([], None)


def event_like(found: AuditEvent, n: int) -> AuditEvent:
    return AuditEvent(**{**event(n).__dict__, "event_id": found.event_id})


def test_since_types_limit_and_cursor(store: AuditStore) -> None:
    kinds = ["tool.executed", "tool.denied", "job.approved"]
    store.put_events([event(n, type=kinds[n % 3]) for n in range(9)])
    assert [e.at - T0 for e in store.events("t1", since=T0 + 6)[0]] == [6, 7, 8]
    first, cursor = store.events("t1", limit=4)
    assert [e.at - T0 for e in first] == [0, 1, 2, 3] and cursor == first[-1].event_id
    rest, end = store.events("t1", limit=4, cursor=cursor)
    assert [e.at - T0 for e in rest] == [4, 5, 6, 7] and end is not None
    last, done = store.events("t1", limit=4, cursor=end)
    assert [e.at - T0 for e in last] == [8] and done is None
    denied, _ = store.events("t1", types=["tool.denied", "job.approved"], since=T0 + 3)
    assert [(e.at - T0, e.type) for e in denied] == [
        (4, "tool.denied"),
        (5, "job.approved"),
        (7, "tool.denied"),
        (8, "job.approved"),
    ]
    # A cursor before ``since`` does not reach back past it.
    assert [e.at - T0 for e in store.events("t1", since=T0 + 7, cursor=first[0].event_id)[0]] == [
        7,
        8,
    ]


def test_exactly_a_page_has_no_next_cursor(store: AuditStore) -> None:
    store.put_events([event(n) for n in range(3)])
    page, cursor = store.events("t1", limit=3)
    assert len(page) == 3 and cursor is None
    filtered, fcursor = store.events("t1", limit=3, types=["tool.executed"])
    assert len(filtered) == 3 and fcursor is None


def test_the_dynamodb_items_expire_after_the_retention(aws_credentials: None) -> None:
    with mock_aws():
        client = boto3.client("dynamodb")
        name = create_tables(client)["audit"]
        DynamoAuditStore(Table(name, client), retention_days=7).put_events(
            [event(n) for n in range(30)]  # more than one BatchWriteItem
        )
        items = Table(name, client).scan_all()
        expiries = {int(i["expires_at"] - i["at"]) for i in items}
        assert expiries == {7 * 86_400}
        assert len(list(Table(name, client).scan_all())) == 30

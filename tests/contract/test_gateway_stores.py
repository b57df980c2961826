"""The gateway's store ports: each in-memory fake and its DynamoDB adapter (moto) agree.

Every test runs twice, on the fake and on the adapter over the stack's tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stratus.aws import AwsClients
from stratus.ddb import Table
from stratus.gateway_stores import dynamo, memory, ports, services
from tests.tables import create_tables


@pytest.fixture(params=["memory", "dynamodb"])
def backend(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[dict[str, Any]]:
    """``{"kind": ..., "table": name -> ddb.Table}`` (no tables for the fakes)."""
    if request.param == "memory":
        yield {"kind": "memory", "table": None}
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        names = create_tables(client)
        yield {"kind": "dynamodb", "table": lambda name: Table(names[name], client)}


def _pick(backend: dict[str, Any], fake: Any, adapter: Any, table: str) -> Any:
    return fake() if backend["kind"] == "memory" else adapter(backend["table"](table))


# -- circuit breaker


@pytest.fixture
def breaker(backend: dict[str, Any]) -> ports.BreakerStore:
    return _pick(backend, memory.MemoryBreakerStore, dynamo.DynamoBreakerStore, "limits")


def test_breaker_counts_failures_and_resets(breaker: ports.BreakerStore) -> None:
    assert breaker.read("BREAKER#e#m") == {}
    assert [breaker.add_failure("BREAKER#e#m") for _ in range(3)] == [1, 2, 3]
    assert int(breaker.read("BREAKER#e#m")["failures"]) == 3
    assert breaker.read("BREAKER#e#other") == {}
    breaker.reset("BREAKER#e#m")
    state = breaker.read("BREAKER#e#m")
    assert int(state["failures"]) == 0 and "opened_until" not in state


def test_breaker_probe_is_won_once_per_opening(breaker: ports.BreakerStore) -> None:
    key = "BREAKER#e#m"
    assert breaker.claim_probe(key, 100, now=101.0, probe_until=161.0) is False  # not open
    breaker.open_until(key, 100.0)
    opened = breaker.read(key)["opened_until"]
    assert float(opened) == 100.0
    assert breaker.claim_probe(key, Decimal("99"), now=101.0, probe_until=161.0) is False
    assert breaker.claim_probe(key, opened, now=101.0, probe_until=161.0) is True
    assert breaker.claim_probe(key, opened, now=102.0, probe_until=162.0) is False
    assert breaker.claim_probe(key, opened, now=161.5, probe_until=221.5) is True  # expired
    breaker.open_until(key, 200.0)
    state = breaker.read(key)
    assert float(state["opened_until"]) == 200.0 and "probe_until" not in state


# -- key buckets and cool-downs


@pytest.fixture
def buckets(backend: dict[str, Any]) -> ports.BucketStore:
    return _pick(backend, memory.MemoryBucketStore, dynamo.DynamoBucketStore, "limits")


def test_a_bucket_takes_within_its_window_and_refuses_past_it(
    buckets: ports.BucketStore,
) -> None:
    take = {"rpm": 2, "tpm": 1000, "expires_at": 999}
    assert buckets.take("k1", 7, 100, **take) is True
    assert buckets.take("k1", 7, 100, **take) is True
    assert buckets.take("k1", 7, 100, **take) is False  # rpm reached
    assert buckets.take("k1", 8, 100, **take) is True  # the next window is new
    assert buckets.take("k2", 7, 900, **take) is True
    assert buckets.take("k2", 7, 200, rpm=5, tpm=1000, expires_at=999) is False  # tpm
    loads, cooling = buckets.read(["k1", "k2", "k3"], 7)
    assert loads == {"k1": ports.BucketLoad(2, 200), "k2": ports.BucketLoad(1, 900)}
    assert cooling == {}


def test_settling_corrects_a_buckets_tokens(buckets: ports.BucketStore) -> None:
    buckets.take("k1", 7, 500, rpm=10, tpm=1000, expires_at=999)
    buckets.add_tokens("k1", 7, -380)
    loads, _ = buckets.read(["k1"], 7)
    assert loads["k1"] == ports.BucketLoad(1, 120)


def test_a_take_that_never_ran_is_taken_back(buckets: ports.BucketStore) -> None:
    take = {"rpm": 1, "tpm": 1000, "expires_at": 999}
    assert buckets.take("k1", 7, 300, **take) is True
    assert buckets.take("k1", 7, 300, **take) is False  # rpm reached
    buckets.untake("k1", 7, 300)
    loads, _ = buckets.read(["k1"], 7)
    assert loads["k1"] == ports.BucketLoad(0, 0)
    assert buckets.take("k1", 7, 300, **take) is True  # its request is free again


def test_a_cool_down_is_read_back(buckets: ports.BucketStore) -> None:
    buckets.cool_down("k1", 1234.5, expires_at=5000)
    loads, cooling = buckets.read(["k1", "k2"], 7)
    assert loads == {} and cooling == {"k1": 1234.5}


# -- budgets


@pytest.fixture
def budgets(backend: dict[str, Any]) -> ports.BudgetStore:
    return _pick(backend, memory.MemoryBudgetStore, dynamo.DynamoBudgetStore, "budgets")


def _reserve(
    budgets: ports.BudgetStore, key: str, rid: str, amount: int, **overrides: int
) -> int | ports.BudgetItem:
    args = {"room": 70, "limit": 100, "expires_at": 999, "hold_until": 500, "max_open": 10}
    return budgets.reserve(key, rid, amount, **{**args, **overrides})


def test_a_reservation_is_refused_past_the_limit(budgets: ports.BudgetStore) -> None:
    # limit 100, reserving 30: room = 70 (committed must be <= 70 before adding).
    assert _reserve(budgets, "TENANT#t#DAY#d", "a", 30) == 30
    assert _reserve(budgets, "TENANT#t#DAY#d", "b", 30, hold_until=600) == 60
    assert _reserve(budgets, "TENANT#t#DAY#d", "c", 30) == 90
    refused = _reserve(budgets, "TENANT#t#DAY#d", "d", 30)  # 90 > 70: refused
    # The refusal carries the item as it was: what give-back-on-read needs.
    assert refused == ports.BudgetItem(
        committed=90,
        spent=0,
        open=(
            ports.OpenReservation("a", 30, 500),
            ports.OpenReservation("b", 30, 600),
            ports.OpenReservation("c", 30, 500),
        ),
    )
    assert _reserve(budgets, "TENANT#u#DAY#d", "a", 30) == 30  # another item


def test_settling_and_releasing_close_the_open_entry_once(budgets: ports.BudgetStore) -> None:
    _reserve(budgets, "B", "a", 30)
    _reserve(budgets, "B", "b", 30)
    assert budgets.settle("B", "a", reserved=30, actual=0, calls=0) == 0  # a release
    assert budgets.settle("B", "a", reserved=30, actual=0, calls=0) is None  # closed already
    assert budgets.settle("B", "b", reserved=30, actual=12, calls=1) == 12  # settled to 12
    assert budgets.settle("B", "b", reserved=30, actual=12, calls=1) is None  # never twice
    assert budgets.read(["B"])["B"] == ports.BudgetItem(committed=12, spent=12, open=())
    assert _reserve(budgets, "B", "c", 30) == 42  # committed: 12 spent + 30 reserved
    assert budgets.settle("B", "c", reserved=30, actual=10, calls=1) == 22


def test_a_given_back_entry_is_given_back_once_and_a_late_settlement_still_counts(
    budgets: ports.BudgetStore,
) -> None:
    _reserve(budgets, "B", "dead", 30, hold_until=100)
    _reserve(budgets, "B", "live", 20)
    entry = ports.OpenReservation("dead", 30, 100)
    assert budgets.give_back("B", [entry]) == [entry]
    assert budgets.give_back("B", [entry]) == []  # a second sweep finds nothing
    assert budgets.read(["B"])["B"] == ports.BudgetItem(
        committed=20, open=(ports.OpenReservation("live", 20, 500),)
    )
    # The "dead" call was only slow: its settlement finds no entry, writes nothing...
    assert budgets.settle("B", "dead", reserved=30, actual=25, calls=1) is None
    # ...and its cost is recorded on its own (committed and spent), never given back twice.
    assert budgets.record_late("B", 25, 1) == 25
    assert budgets.read(["B"])["B"] == ports.BudgetItem(
        committed=45, spent=25, open=(ports.OpenReservation("live", 20, 500),)
    )


def test_give_back_releases_only_the_entries_still_open(budgets: ports.BudgetStore) -> None:
    for rid in ("a", "b", "c"):
        _reserve(budgets, "B", rid, 10, room=1000, hold_until=100)
    budgets.settle("B", "b", reserved=10, actual=4, calls=1)  # settled meanwhile
    stale = [ports.OpenReservation(rid, 10, 100) for rid in ("a", "b", "c")]
    assert budgets.give_back("B", stale) == [stale[0], stale[2]]
    assert budgets.read(["B"])["B"] == ports.BudgetItem(committed=4, spent=4, open=())


def test_a_closed_item_shows_what_is_open_and_takes_no_reservation(
    budgets: ports.BudgetStore,
) -> None:
    _reserve(budgets, "T", "dead", 30)
    closed = budgets.close("T", now=50, expires_at=999)
    assert closed == ports.BudgetItem(
        committed=30, open=(ports.OpenReservation("dead", 30, 500),), closed=True
    )
    refused = _reserve(budgets, "T", "late", 10)  # room left, but the item is closed
    assert isinstance(refused, ports.BudgetItem) and refused.closed
    assert budgets.read(["T"])["T"].open == (ports.OpenReservation("dead", 30, 500),)
    # Closing again changes nothing; a never-used item is created closed.
    assert budgets.close("T", now=60, expires_at=999) == closed
    assert budgets.close("NEW", now=60, expires_at=999) == ports.BudgetItem(closed=True)
    assert isinstance(_reserve(budgets, "NEW", "late", 10), ports.BudgetItem)


def test_the_open_entries_of_an_item_are_bounded(budgets: ports.BudgetStore) -> None:
    assert _reserve(budgets, "B", "a", 1, max_open=2) == 1
    assert _reserve(budgets, "B", "b", 1, max_open=2) == 2
    full = _reserve(budgets, "B", "c", 1, max_open=2)
    assert isinstance(full, ports.BudgetItem) and len(full.open) == 2
    assert full.committed == 2  # refused for the bound, not for money
    budgets.settle("B", "a", reserved=1, actual=1, calls=1)
    assert _reserve(budgets, "B", "c", 1, max_open=2) == 3


def test_read_returns_the_items_that_exist(budgets: ports.BudgetStore) -> None:
    _reserve(budgets, "B1", "a", 5)
    _reserve(budgets, "B2", "a", 7)
    found = budgets.read(["B1", "B2", "missing"])
    assert set(found) == {"B1", "B2"}
    assert found["B2"].committed == 7 and found["B2"].open == (ports.OpenReservation("a", 7, 500),)


def test_the_exhausted_marker_is_set_once(budgets: ports.BudgetStore) -> None:
    _reserve(budgets, "B", "a", 50, room=50)
    budgets.settle("B", "a", reserved=50, actual=50, calls=1)
    assert budgets.mark_exhausted("B") == 50
    assert budgets.mark_exhausted("B") is None


#: Agent and model names may hold any of the separators a key or a path would use.
ODD = "ft:gpt-4o:org#x.1-b"


def test_a_settlement_adds_its_usage_in_the_same_write(budgets: ports.BudgetStore) -> None:
    _reserve(budgets, "B", "a", 30)
    _reserve(budgets, "B", "b", 30)
    paid = ports.UsageAdd(ODD, {"calls": 1, "input_tokens": 20, "cost_nusd": 12, "cache_hits": 0})
    assert budgets.settle("B", "a", reserved=30, actual=12, calls=1, usage=paid) == 12
    assert budgets.settle("B", "a", reserved=30, actual=12, calls=1, usage=paid) is None
    other = ports.UsageAdd("a", {"calls": 1, "input_tokens": 3})
    assert budgets.settle("B", "b", reserved=30, actual=5, calls=1, usage=other) == 17
    item = budgets.read(["B"])["B"]
    # Zero counters are not written; the refused second settlement added nothing.
    assert item.usage == {
        "a": {"calls": 1, "input_tokens": 3},
        ODD: {"calls": 1, "input_tokens": 20, "cost_nusd": 12},
    }
    assert (item.committed, item.spent, item.open) == (17, 17, ())


def test_a_late_settlement_adds_its_usage(budgets: ports.BudgetStore) -> None:
    _reserve(budgets, "B", "dead", 30, hold_until=100)
    budgets.give_back("B", [ports.OpenReservation("dead", 30, 100)])
    late = ports.UsageAdd("gpt-5", {"calls": 1, "output_tokens": 7, "cost_nusd": 25})
    assert budgets.settle("B", "dead", reserved=30, actual=25, calls=1, usage=late) is None
    assert budgets.record_late("B", 25, 1, usage=late) == 25
    item = budgets.read(["B"])["B"]
    assert item.usage == {"gpt-5": {"calls": 1, "output_tokens": 7, "cost_nusd": 25}}
    assert (item.committed, item.spent) == (25, 25)


def test_an_item_without_a_limit_carries_usage_unconditionally(
    budgets: ports.BudgetStore,
) -> None:
    hit = ports.UsageAdd(ODD, {"calls": 0, "ledger_hits": 1, "saved_nusd": 0})
    budgets.add_usage("AGENT#x#DAY#d", hit, expires_at=999)
    budgets.add_usage("AGENT#x#DAY#d", hit, expires_at=1234)
    budgets.add_usage("AGENT#x#DAY#d", ports.UsageAdd("m", {"calls": 0}), expires_at=1)  # no-op
    item = budgets.read(["AGENT#x#DAY#d"])["AGENT#x#DAY#d"]
    assert item == ports.BudgetItem(usage={ODD: {"ledger_hits": 2}})
    # Usage next to open entries: neither is mistaken for the other.
    _reserve(budgets, "AGENT#x#DAY#d", "a", 30)
    item = budgets.read(["AGENT#x#DAY#d"])["AGENT#x#DAY#d"]
    assert item.open == (ports.OpenReservation("a", 30, 500),)
    assert item.usage == {ODD: {"ledger_hits": 2}} and item.committed == 30


def test_tenant_limits_are_set_one_at_a_time(budgets: ports.BudgetStore) -> None:
    assert budgets.tenant_limits("t") == {}
    budgets.set_tenant_limits("t", {"daily_usd": Decimal("5"), "monthly_usd": None})
    budgets.set_tenant_limits("t", {"daily_usd": None, "monthly_usd": Decimal("50.5")})
    limits = budgets.tenant_limits("t")
    assert (limits["daily_usd"], limits["monthly_usd"]) == (Decimal("5"), Decimal("50.5"))
    assert budgets.tenant_limits("other") == {}


# -- call ledger and response cache


@pytest.fixture
def records(backend: dict[str, Any]) -> ports.CompletionRecords:
    return _pick(backend, memory.MemoryCompletionRecords, dynamo.DynamoCompletionRecords, "ledger")


def test_the_first_writer_wins(records: ports.CompletionRecords) -> None:
    assert records.get("CALL#1") is None
    assert records.put_if_absent("CALL#1", '{"a": 1}', expires_at=200, now=100) is True
    assert records.put_if_absent("CALL#1", '{"a": 2}', expires_at=300, now=150) is False
    assert records.get("CALL#1") == ports.StoredCompletion('{"a": 1}', 200)


def test_an_expired_entry_is_replaced(records: ports.CompletionRecords) -> None:
    records.put_if_absent("CALL#1", "old", expires_at=200, now=100)
    assert records.put_if_absent("CALL#1", "new", expires_at=400, now=201) is True
    assert records.get("CALL#1") == ports.StoredCompletion("new", 400)


# -- usage rollups


@pytest.fixture
def rollups(backend: dict[str, Any]) -> ports.RollupStore:
    return _pick(backend, memory.MemoryRollupStore, dynamo.DynamoRollupStore, "usage")


def test_rollups_add_up_and_read_back(rollups: ports.RollupStore) -> None:
    rollups.add("TENANT#t#DAY#d", "AGENT#a", {"calls": 1, "cost_nusd": 10}, expires_at=9)
    rollups.add("TENANT#t#DAY#d", "AGENT#a", {"calls": 1, "cost_nusd": 5}, expires_at=9)
    rollups.add("TENANT#t#DAY#d", "AGENT#b", {"calls": 0, "cost_nusd": 0}, expires_at=9)
    rollups.add("TENANT#u#DAY#d", "AGENT#a", {"calls": 7, "cost_nusd": 7}, expires_at=9)
    row = rollups.row("TENANT#t#DAY#d", "AGENT#a")
    assert (int(row["calls"]), int(row["cost_nusd"])) == (2, 15)
    rows = rollups.rows("TENANT#t#DAY#d")
    assert sorted(str(r["sk"]) for r in rows) == ["AGENT#a", "AGENT#b"]
    assert rollups.row("TENANT#t#DAY#d", "AGENT#c") == {}
    assert rollups.rows("TENANT#none") == []


# -- the model keys secret and the alerts topic (AWS services other than DynamoDB)


@pytest.fixture(params=["memory", "secretsmanager"])
def secrets(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[Any]:
    value = json.dumps({"api_keys": ["sk-1", "sk-2"]})
    if request.param == "memory":
        yield memory.MemorySecrets({"model-keys": value})
        return
    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name="model-keys", SecretString=value)
        yield services.SecretsManagerSource(AwsClients())


def test_a_secret_is_read_by_name(secrets: ports.SecretSource) -> None:
    raw = secrets.get("model-keys", max_age_s=0)
    assert json.loads(raw) == {"api_keys": ["sk-1", "sk-2"]}


def test_alerts_are_published_to_the_stages_topic(aws_credentials: None) -> None:
    with mock_aws():
        sns = boto3.client("sns")
        sqs = boto3.client("sqs")
        topic = sns.create_topic(Name="stratus-alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        publisher = services.SnsAlertPublisher(AwsClients(), "stratus-alerts")
        assert publisher.topic_arn == topic
        publisher.publish("Stratus budget tenant_day at 80%", {"threshold_percent": 80})
        got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)["Messages"]
        assert json.loads(got[0]["Body"]) == {"threshold_percent": 80}

    fake = memory.MemoryAlerts()
    fake.publish("subject", {"threshold_percent": 80})
    assert fake.sent == [("subject", {"threshold_percent": 80})]

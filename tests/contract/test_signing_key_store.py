"""The callback signing key store port: the DynamoDB adapter (on moto) and the fake agree."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from stratus.ddb import ConditionFailed, Table
from stratus.signing_keys import (
    DynamoSigningKeyStore,
    MemorySigningKeyStore,
    SigningKey,
    SigningKeys,
    SigningKeyStore,
)
from tests.tables import create_tables


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[SigningKeyStore]:
    if request.param == "memory":
        yield MemorySigningKeyStore()
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        yield DynamoSigningKeyStore(Table(create_tables(client)["callback_keys"], client))


def key(kid: str, created_at: float) -> SigningKey:
    return SigningKey(kid=kid, secret=f"secret-{kid}", created_at=created_at)


def test_keys_are_per_tenant_oldest_first_and_a_kid_is_never_overwritten(
    store: SigningKeyStore,
) -> None:
    store.add("A", key("k2", 20.0))
    store.add("A", key("k1", 10.0))
    store.add("B", key("k1", 5.0))  # the same kid in another tenant is another key
    assert [(k.kid, k.secret, k.created_at) for k in store.keys("A")] == [
        ("k1", "secret-k1", 10.0),
        ("k2", "secret-k2", 20.0),
    ]
    assert [k.created_at for k in store.keys("B")] == [5.0]
    assert store.keys("nobody") == []
    with pytest.raises(ConditionFailed):
        store.add("A", SigningKey(kid="k1", secret="another", created_at=30.0))
    assert store.keys("A")[0].secret == "secret-k1"


def test_retire_only_ever_shortens_a_keys_validity(store: SigningKeyStore) -> None:
    store.add("A", key("k1", 10.0))
    store.retire("A", "k1", 500.0)
    assert store.keys("A")[0].valid_until == 500.0
    store.retire("A", "k1", 900.0)  # later: ignored
    assert store.keys("A")[0].valid_until == 500.0
    store.retire("A", "k1", 100.0)
    assert store.keys("A")[0].valid_until == 100.0
    store.retire("A", "missing", 1.0)  # nothing to retire: no error, nothing created
    assert [k.kid for k in store.keys("A")] == ["k1"]


def test_a_rotation_through_the_store(store: SigningKeyStore) -> None:
    now = [1_000.0]
    keys = SigningKeys(store, clock=lambda: now[0])
    first = keys.create_for("A")
    now[0] += 1
    second, previous = keys.rotate("A", grace_s=60)
    assert [p.kid for p in previous] == [first.kid]
    assert [k.kid for k in keys.active("A")] == [second.kid, first.kid]
    now[0] += 60
    assert [k.kid for k in keys.active("A")] == [second.kid]

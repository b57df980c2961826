"""The tenant directory port: the DynamoDB adapter and the in-memory fake agree."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from stratus.tenants import MemoryTenants, TenantDirectory, TenantStore, new_api_key
from tests.tables import create_tables


@pytest.fixture(params=["memory", "dynamodb"])
def directory(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[TenantDirectory]:
    if request.param == "memory":
        yield MemoryTenants()
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        yield TenantStore(create_tables(client)["tenants"], client)


def test_a_created_key_authenticates_its_tenant(directory: TenantDirectory) -> None:
    tenant, key = directory.create("  acme  ")
    found = directory.authenticate(key)
    assert found is not None
    assert (found.tenant_id, found.name) == (tenant.tenant_id, "acme")
    assert directory.is_active(tenant.tenant_id)


def test_unknown_and_malformed_keys_do_not_authenticate(directory: TenantDirectory) -> None:
    directory.create("acme")
    assert directory.authenticate(new_api_key()) is None
    assert directory.authenticate("sk-stratus-short") is None
    assert directory.authenticate("") is None


def test_tenants_are_apart(directory: TenantDirectory) -> None:
    first, first_key = directory.create("one")
    second, second_key = directory.create("two")
    assert first.tenant_id != second.tenant_id
    assert directory.authenticate(first_key).tenant_id == first.tenant_id  # type: ignore[union-attr]
    assert directory.authenticate(second_key).tenant_id == second.tenant_id  # type: ignore[union-attr]


def test_an_unknown_tenant_is_not_active(directory: TenantDirectory) -> None:
    assert not directory.is_active("0" * 32)


def test_tenant_ids_lists_every_tenant_and_no_key(directory: TenantDirectory) -> None:
    assert directory.tenant_ids() == []
    ids = sorted(directory.create(name)[0].tenant_id for name in ("one", "two", "three"))
    assert directory.tenant_ids() == ids

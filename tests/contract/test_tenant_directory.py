"""The tenant directory port: the DynamoDB adapter and the in-memory fake agree."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from stratus.tenants import (
    LEGACY_SCOPES,
    SCOPES,
    MemoryTenants,
    TenantDirectory,
    TenantStore,
    hash_key,
    new_api_key,
)
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


# -- key scopes (issue 14's names; the groundwork of issue 12's review routes) ------------


def _legacy_key(directory: TenantDirectory, tenant_id: str) -> str:
    """A key item as written before keys had scopes: no ``scopes`` attribute."""
    if isinstance(directory, MemoryTenants):
        return directory.add_legacy_key(tenant_id)
    assert isinstance(directory, TenantStore)
    key = new_api_key()
    directory._table.put(
        {
            "pk": f"KEY#{hash_key(key)}",
            "tenant_id": tenant_id,
            "tenant_name": "old",
            "status": "active",
            "created_at": "2026-01-01T00:00:00+00:00",
        }
    )
    return key


def test_a_tenants_first_key_has_every_scope(directory: TenantDirectory) -> None:
    tenant, key = directory.create("acme")
    assert tenant.scopes == SCOPES
    found = directory.authenticate(key)
    assert found is not None and found.scopes == SCOPES
    assert "admin" in found.scopes


def test_a_key_keeps_the_scopes_it_was_made_with(directory: TenantDirectory) -> None:
    _, key = directory.create("acme", scopes=["jobs", "invoke"])
    found = directory.authenticate(key)
    assert found is not None
    assert found.scopes == ("invoke", "jobs")  # in SCOPES order
    _, bare = directory.create("bare", scopes=[])
    assert directory.authenticate(bare).scopes == ()  # type: ignore[union-attr]


def test_a_key_made_before_scopes_gets_every_scope_but_admin(
    directory: TenantDirectory,
) -> None:
    tenant, _ = directory.create("acme")
    found = directory.authenticate(_legacy_key(directory, tenant.tenant_id))
    assert found is not None and found.tenant_id == tenant.tenant_id
    assert found.scopes == LEGACY_SCOPES
    assert "admin" not in found.scopes and "invoke" in found.scopes


def test_unknown_scopes_are_refused(directory: TenantDirectory) -> None:
    with pytest.raises(ValueError, match="unknown scopes"):
        directory.create("acme", scopes=["invoke", "root"])
    assert directory.tenant_ids() == []

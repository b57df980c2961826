"""The tenant directory port: the DynamoDB adapter and the in-memory fake agree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stratus.tenants import (
    LEGACY_SCOPES,
    SCOPES,
    KeyNotActive,
    KeyNotFound,
    MemoryTenants,
    TenantDirectory,
    TenantNotFound,
    TenantStore,
    TenantSuspended,
    hash_key,
    key_id_for,
    new_api_key,
)
from tests.tables import create_tables


class Clock:
    """A settable clock (expiry and grace periods without waiting)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "dynamodb"])
def directory(
    request: pytest.FixtureRequest, aws_credentials: None, clock: Clock
) -> Iterator[TenantDirectory]:
    if request.param == "memory":
        yield MemoryTenants(clock=clock)
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        yield TenantStore(create_tables(client)["tenants"], client, clock=clock)


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


# -- key lifecycle (issue 14) -------------------------------------------------------------


def _key(directory: TenantDirectory, tenant_id: str, key_id: str) -> Any:
    (found,) = [k for k in directory.list_keys(tenant_id) if k.key_id == key_id]
    return found


def test_a_new_key_has_its_id_scopes_role_and_customer(directory: TenantDirectory) -> None:
    tenant, owner = directory.create("acme")
    info, key = directory.create_key(
        tenant.tenant_id, ["sessions", "invoke"], role="support", customer_id="cust-7"
    )
    assert info.key_id == key_id_for(hash_key(key)) and info.key_id.startswith("key_")
    assert (info.scopes, info.role, info.customer_id) == (
        ("invoke", "sessions"),
        "support",
        "cust-7",
    )
    seen = directory.authenticate(key)
    assert seen is not None and seen.tenant_id == tenant.tenant_id
    assert (seen.key_id, seen.scopes, seen.role, seen.customer_id) == (
        info.key_id,
        ("invoke", "sessions"),
        "support",
        "cust-7",
    )
    owner_seen = directory.authenticate(owner)
    assert owner_seen is not None and owner_seen.key_id == tenant.key_id != info.key_id


def test_listing_shows_the_tenants_keys_only_and_never_a_key_or_hash(
    directory: TenantDirectory,
) -> None:
    acme, owner = directory.create("acme")
    other, _ = directory.create("other")
    _, second = directory.create_key(acme.tenant_id, ["invoke"])
    directory.create_key(other.tenant_id, ["invoke"])
    legacy = _legacy_key(directory, acme.tenant_id)
    listed = directory.list_keys(acme.tenant_id)
    ids = {k.key_id for k in listed}
    assert ids == {key_id_for(hash_key(k)) for k in (owner, second, legacy)}
    assert [k.legacy for k in listed if k.key_id == key_id_for(hash_key(legacy))] == [True]
    text = " ".join(k.model_dump_json() for k in listed)
    for secret in (owner, second, legacy):
        assert secret not in text and hash_key(secret) not in text
    assert all(k.tenant_id == acme.tenant_id for k in listed)


def test_a_revoked_key_stops_and_revoking_again_is_harmless(directory: TenantDirectory) -> None:
    tenant, owner = directory.create("acme")
    info, key = directory.create_key(tenant.tenant_id, ["invoke"])
    revoked = directory.revoke_key(tenant.tenant_id, info.key_id)
    assert revoked.status == "revoked" and revoked.revoked_at
    check = directory.check(key)
    assert (check.tenant, check.reason, check.tenant_id) == (None, "key_revoked", tenant.tenant_id)
    assert directory.revoke_key(tenant.tenant_id, info.key_id).status == "revoked"
    assert directory.authenticate(owner) is not None  # only that key


def test_a_legacy_key_can_be_revoked_by_its_derived_id(directory: TenantDirectory) -> None:
    tenant, _ = directory.create("acme")
    legacy = _legacy_key(directory, tenant.tenant_id)
    directory.revoke_key(tenant.tenant_id, key_id_for(hash_key(legacy)))
    assert directory.authenticate(legacy) is None


def test_another_tenants_or_an_unknown_key_is_not_found(directory: TenantDirectory) -> None:
    acme, _ = directory.create("acme")
    other, _ = directory.create("other")
    info, key = directory.create_key(other.tenant_id, ["invoke"])
    for key_id in (info.key_id, "key_" + "0" * 20):
        with pytest.raises(KeyNotFound):
            directory.revoke_key(acme.tenant_id, key_id)
        with pytest.raises(KeyNotFound):
            directory.rotate_key(acme.tenant_id, key_id)
    assert directory.authenticate(key) is not None


def test_an_expired_key_is_refused(directory: TenantDirectory, clock: Clock) -> None:
    tenant, _ = directory.create("acme")
    info, key = directory.create_key(tenant.tenant_id, ["invoke"], expires_at=clock.now + 60)
    assert directory.authenticate(key) is not None
    clock.now += 59
    assert directory.authenticate(key) is not None
    clock.now += 1
    assert directory.check(key).reason == "key_expired"
    assert _key(directory, tenant.tenant_id, info.key_id).status == "expired"
    with pytest.raises(ValueError, match="future"):
        directory.create_key(tenant.tenant_id, ["invoke"], expires_at=clock.now - 1)


def test_rotation_keeps_the_old_key_for_the_grace_period(
    directory: TenantDirectory, clock: Clock
) -> None:
    tenant, _ = directory.create("acme")
    info, old_key = directory.create_key(
        tenant.tenant_id, ["jobs", "invoke"], role="agent", customer_id="c1"
    )
    rotation = directory.rotate_key(tenant.tenant_id, info.key_id, grace_s=300)
    assert rotation.new.key_id == key_id_for(hash_key(rotation.key)) != info.key_id
    assert (rotation.new.scopes, rotation.new.role, rotation.new.customer_id) == (
        ("invoke", "jobs"),
        "agent",
        "c1",
    )
    assert rotation.old.rotated_to == rotation.new.key_id
    assert rotation.old.expires_at is not None
    new_seen = directory.authenticate(rotation.key)
    assert new_seen is not None and new_seen.scopes == ("invoke", "jobs")
    clock.now += 299
    assert directory.authenticate(old_key) is not None
    clock.now += 1
    assert directory.check(old_key).reason == "key_expired"
    assert directory.authenticate(rotation.key) is not None
    with pytest.raises(KeyNotActive):  # a key rotates once (a retried rotation is refused)
        directory.rotate_key(tenant.tenant_id, info.key_id)


def test_rotation_never_extends_an_expiry_and_refuses_revoked_keys(
    directory: TenantDirectory, clock: Clock
) -> None:
    tenant, _ = directory.create("acme")
    info, old_key = directory.create_key(tenant.tenant_id, ["invoke"], expires_at=clock.now + 10)
    directory.rotate_key(tenant.tenant_id, info.key_id)  # default grace: 24 h
    clock.now += 10
    assert directory.check(old_key).reason == "key_expired"
    gone, _ = directory.create_key(tenant.tenant_id, ["invoke"])
    directory.revoke_key(tenant.tenant_id, gone.key_id)
    with pytest.raises(KeyNotActive):
        directory.rotate_key(tenant.tenant_id, gone.key_id)
    with pytest.raises(ValueError, match="grace_s"):
        directory.rotate_key(tenant.tenant_id, info.key_id, grace_s=-1)


def test_a_suspended_tenants_keys_stop_until_it_resumes(directory: TenantDirectory) -> None:
    tenant, owner = directory.create("acme")
    _, second = directory.create_key(tenant.tenant_id, ["invoke"])
    legacy = _legacy_key(directory, tenant.tenant_id)
    other, other_key = directory.create("other")
    assert directory.suspend(tenant.tenant_id) == 3
    assert directory.suspend(tenant.tenant_id) == 3  # idempotent
    for key in (owner, second, legacy):
        check = directory.check(key)
        assert (check.tenant, check.reason, check.tenant_id) == (
            None,
            "tenant_suspended",
            tenant.tenant_id,
        )
    assert not directory.is_active(tenant.tenant_id)
    assert directory.authenticate(other_key) is not None
    with pytest.raises(TenantSuspended):
        directory.create_key(tenant.tenant_id, ["invoke"])
    directory.resume(tenant.tenant_id)
    assert directory.is_active(tenant.tenant_id)
    assert all(directory.authenticate(k) is not None for k in (owner, second, legacy))
    with pytest.raises(TenantNotFound):
        directory.suspend("0" * 32)
    with pytest.raises(TenantNotFound):
        directory.create_key("0" * 32, ["invoke"])
    assert other.tenant_id in directory.tenant_ids()


def test_a_revoked_key_stays_revoked_after_a_resume(directory: TenantDirectory) -> None:
    tenant, _ = directory.create("acme")
    info, key = directory.create_key(tenant.tenant_id, ["invoke"])
    directory.revoke_key(tenant.tenant_id, info.key_id)
    directory.suspend(tenant.tenant_id)
    directory.resume(tenant.tenant_id)
    assert directory.check(key).reason == "key_revoked"


def test_bad_roles_and_customers_are_refused(directory: TenantDirectory) -> None:
    tenant, _ = directory.create("acme")
    with pytest.raises(ValueError, match="role"):
        directory.create_key(tenant.tenant_id, ["invoke"], role="no spaces")
    with pytest.raises(ValueError, match="customer_id"):
        directory.create_key(tenant.tenant_id, ["invoke"], customer_id="x" * 200)
    with pytest.raises(ValueError, match="unknown scopes"):
        directory.create_key(tenant.tenant_id, ["root"])
    assert len(directory.list_keys(tenant.tenant_id)) == 1

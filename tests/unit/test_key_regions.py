"""Keys that name their home region, tenant tiers, and the caller's tier (no AWS)."""

from __future__ import annotations

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from functions.handlers.principals import principal
from stratus.agents import Principal
from stratus.tenant_keys import (
    KEY_PREFIX,
    Tenant,
    key_region,
    new_api_key,
    well_formed,
    wrong_region,
)
from stratus.tenants import MemoryTenants


def test_a_regional_key_names_its_region_and_a_legacy_key_none() -> None:
    for _ in range(50):  # the random part may contain "_": the region still parses
        key = new_api_key("eu-west-1")
        assert key.startswith(f"{KEY_PREFIX}eu-west-1_")
        assert key_region(key) == "eu-west-1" and well_formed(key)
        legacy = new_api_key()
        assert key_region(legacy) is None and well_formed(legacy)
    assert key_region(new_api_key("us-gov-west-1")) == "us-gov-west-1"


@pytest.mark.parametrize(
    "key",
    [
        "sk-stratus-eu-west-1_short",
        "sk-stratus-Eu-West-1_" + "a" * 43,
        "sk-stratus-euwest1_" + "a" * 43,
        "sk-stratus-eu-west-1-" + "a" * 43,
        "sk-other-eu-west-1_" + "a" * 43,
        "eu-west-1_" + "a" * 43,
    ],
)
def test_malformed_regional_keys_are_not_keys(key: str) -> None:
    assert key_region(key) is None
    assert not well_formed(key)


def test_wrong_region_only_for_a_key_of_another_region() -> None:
    eu = new_api_key("eu-west-1")
    assert wrong_region(eu, "us-east-1") == "eu-west-1"
    assert wrong_region(eu, "eu-west-1") is None
    assert wrong_region(eu, "") is None  # region unknown: the table decides
    assert wrong_region(new_api_key(), "us-east-1") is None  # legacy: where it is stored


def test_a_bad_region_or_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="not an AWS region"):
        new_api_key("mars-1")
    with pytest.raises(ValueError, match="unknown tier"):
        Tenant(tenant_id="t", name="n", created_at="x", tier="gold")


def test_memory_tenants_carry_tier_and_home_region_onto_every_key() -> None:
    tenants = MemoryTenants()
    tenant, key = tenants.create("acme", tier="enterprise", home_region="eu-west-1")
    assert key_region(key) == "eu-west-1"
    _, second = tenants.create_key(tenant.tenant_id, ["invoke"])
    assert key_region(second) == "eu-west-1"
    seen = tenants.authenticate(second)
    assert seen is not None and (seen.tier, seen.home_region) == ("enterprise", "eu-west-1")
    assert tenants.set_tier(tenant.tenant_id, "free") == 2
    assert {tenants.authenticate(k).tier for k in (key, second)} == {"free"}  # type: ignore[union-attr]
    rotated = tenants.rotate_key(tenant.tenant_id, seen.key_id or "")
    assert key_region(rotated.key) == "eu-west-1"
    assert tenants.authenticate(rotated.key).tier == "free"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        tenants.set_tier(tenant.tenant_id, "gold")


def test_the_principal_carries_the_tier_outside_its_encoding() -> None:
    event = APIGatewayProxyEvent(
        {
            "requestContext": {
                "authorizer": {"tenant_id": "t1", "key_id": "key_1", "tier": "enterprise"}
            }
        }
    )
    who = principal(event)
    assert who.tier == "enterprise"
    assert who.encode() == Principal(key_id="key_1").encode()
    assert Principal.decode(who.encode()) == who  # the tier is not part of equality
    old = APIGatewayProxyEvent({"requestContext": {"authorizer": {"tenant_id": "t1"}}})
    assert principal(old).tier == "standard"

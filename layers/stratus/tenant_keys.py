"""API keys: scopes, ids, the key item's shape and the one rule that judges a key.

A key is shown once, at creation, and stored only as its SHA-256 hash: keys are
256 random bits, so a fast hash is safe here (no dictionary to attack) and lets
the authorizer find the key with one strongly consistent GetItem.

A key item (``KEY#<hash>`` in the tenants table) carries ``tenant_id``,
``tenant_name``, ``key_id``, ``status`` (``active`` or ``revoked``), ``created_at``,
``scopes``, and optionally ``role``, ``customer_id``, ``expires_at`` (epoch seconds;
rotation sets it to the end of the grace period), ``rotated_to`` (the new key's id)
and ``tenant_status`` (``suspended``: the tenant's status, denormalised onto its keys
at suspend time so the authorizer stays one GetItem), ``tier`` and ``home_region`` (the
tenant's, denormalised for the same reason).

A key made for a tenant with a home region names that region
(``sk-stratus-<region>_<token>``): the authorizer of another region refuses it
(``wrong_region``) from the key alone, without reading any other region's data, and
since only the hash of the whole key is stored, the region part cannot be edited. A key
without a region (made before regions, or for a tenant without a home region) belongs to
the region whose table holds it.

The ``key_id`` is derived from the hash (``key_`` + 20 hex digits of
SHA-256("stratus-key-id:" + hash)): it names a key in listings, audit events and
``DELETE /v1/keys/{key_id}`` without revealing the key or its hash, and keys made
before key ids existed get the same id the derivation gives them.

Scopes: :data:`SCOPES`. A tenant's first key is its owner's and gets every scope; a
key item written before scopes existed (no ``scopes`` attribute) gets every scope
except ``admin``: a migration, not a lock-out.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from stratus.errors import StratusError

KEY_PREFIX = "sk-stratus-"
_KEY_BODY_LEN = 43  # token_urlsafe(32)
MAX_KEY_LEN = 128
#: An AWS region name (``eu-west-1``, ``us-gov-west-1``, ``ap-southeast-4``).
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
#: What sits between a key's region and its random part (never in a region name).
_REGION_SEP = "_"

#: A tenant's service tier (feature flags segment on it).
TIERS: tuple[str, ...] = ("free", "standard", "enterprise")
DEFAULT_TIER = "standard"

#: What a key may do (issue 14 names them; each route requires one).
SCOPES: tuple[str, ...] = (
    "invoke",
    "sessions",
    "jobs",
    "jobs:approve",
    "usage:read",
    "audit:read",
    "admin",
)
#: The scopes of a key made before keys had scopes: everything but ``admin``.
LEGACY_SCOPES: tuple[str, ...] = tuple(s for s in SCOPES if s != "admin")

#: How long a rotated key keeps working by default (24 h), and the longest grace allowed.
DEFAULT_GRACE_S = 86_400
MAX_GRACE_S = 30 * 86_400
#: A role or an end-customer id bound to a key.
ROLE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CUSTOMER_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
KEY_ID_PATTERN = r"^key_[0-9a-f]{20}$"

#: Why a key did not authenticate (``Authentication.reason``; audited as ``reason``).
Refusal = Literal["unknown_key", "key_revoked", "key_expired", "tenant_suspended", "wrong_region"]


def key_scopes(scopes: Iterable[str] | None) -> tuple[str, ...]:
    """``scopes`` checked against :data:`SCOPES`, in that order; None means every scope."""
    if scopes is None:
        return SCOPES
    wanted = set(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def stored_scopes(item: dict[str, Any]) -> tuple[str, ...]:
    """A key item's scopes; an item without the attribute predates scopes (legacy)."""
    raw = item.get("scopes")
    if raw is None:
        return LEGACY_SCOPES
    return tuple(s for s in SCOPES if s in {str(v) for v in raw})


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; known: {', '.join(TIERS)}")
    return tier


def check_region(region: str) -> str:
    if not REGION_PATTERN.match(region):
        raise ValueError(f"{region!r} is not an AWS region name (like eu-west-1)")
    return region


def new_api_key(region: str | None = None) -> str:
    """A new key; with ``region``, one that names its home region (module docstring)."""
    token = secrets.token_urlsafe(32)
    if region is None:
        return KEY_PREFIX + token
    return f"{KEY_PREFIX}{check_region(region)}{_REGION_SEP}{token}"


def key_region(key: str) -> str | None:
    """The home region a key names, or None (a key without one, or not a Stratus key).

    The random part may itself contain ``_``; a region never does, so the region is what
    precedes the first ``_`` when the rest is exactly one random part long."""
    body = key.removeprefix(KEY_PREFIX)
    if body == key or len(body) == _KEY_BODY_LEN:
        return None
    region, sep, token = body.partition(_REGION_SEP)
    if not sep or len(token) != _KEY_BODY_LEN or not REGION_PATTERN.match(region):
        return None
    return region


def wrong_region(key: str, serving_region: str) -> str | None:
    """The key's home region when it names one other than ``serving_region``; else None.

    An unknown serving region (empty) refuses nothing: the table lookup decides."""
    home = key_region(key)
    if home is None or not serving_region or home == serving_region:
        return None
    return home


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_for(key_hash: str) -> str:
    """The public id of the key whose hash is ``key_hash`` (see the module docstring)."""
    return "key_" + hashlib.sha256(f"stratus-key-id:{key_hash}".encode()).hexdigest()[:20]


def bearer_token(authorization: str | None) -> str | None:
    """The key from an ``Authorization: Bearer <key>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LEN:
        return None
    return token


def well_formed(key: str) -> bool:
    if not key.startswith(KEY_PREFIX):
        return False
    return len(key) == len(KEY_PREFIX) + _KEY_BODY_LEN or key_region(key) is not None


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="seconds")


def now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")


def check_binding(role: str | None, customer_id: str | None) -> None:
    if role is not None and not ROLE_PATTERN.match(role):
        raise ValueError(f"role must match {ROLE_PATTERN.pattern}")
    if customer_id is not None and not CUSTOMER_PATTERN.match(customer_id):
        raise ValueError(f"customer_id must match {CUSTOMER_PATTERN.pattern}")


class Tenant(BaseModel):
    """A tenant; after :meth:`authenticate`, as seen through the key that authenticated."""

    tenant_id: str
    name: str = Field(min_length=1, max_length=100)
    status: str = "active"
    created_at: str
    #: The scopes of the key that authenticated (or was created); empty when not known.
    scopes: tuple[str, ...] = ()
    #: The authenticating (or created) key's id, role and end customer.
    key_id: str | None = None
    role: str | None = None
    customer_id: str | None = None
    #: The service tier (:data:`TIERS`) and the region the tenant's data lives in (None:
    #: created before regions, served where its table is).
    tier: str = DEFAULT_TIER
    home_region: str | None = None

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, value: str) -> str:
        return check_tier(value)

    @field_validator("home_region")
    @classmethod
    def _region_name(cls, value: str | None) -> str | None:
        return None if value is None else check_region(value)


class KeyInfo(BaseModel):
    """What may be shown about a key: never the key, never its hash."""

    key_id: str
    tenant_id: str
    scopes: tuple[str, ...]
    role: str | None = None
    customer_id: str | None = None
    #: ``active``, ``revoked``, or ``expired`` (past ``expires_at``, as of the listing).
    status: str
    created_at: str
    expires_at: str | None = None
    rotated_to: str | None = None
    revoked_at: str | None = None
    #: Made before keys had scopes (it has every scope but ``admin``).
    legacy: bool = False


def key_info(item: dict[str, Any], now: float) -> KeyInfo:
    expires = item.get("expires_at")
    status = str(item.get("status") or "active")
    if status == "active" and expires is not None and now >= float(expires):
        status = "expired"
    pk = str(item.get("pk") or "")
    return KeyInfo(
        key_id=str(item.get("key_id") or key_id_for(pk.removeprefix("KEY#"))),
        tenant_id=str(item["tenant_id"]),
        scopes=stored_scopes(item),
        role=item.get("role") or None,
        customer_id=item.get("customer_id") or None,
        status=status,
        created_at=str(item.get("created_at") or ""),
        expires_at=iso(float(expires)) if expires is not None else None,
        rotated_to=item.get("rotated_to") or None,
        revoked_at=item.get("revoked_at") or None,
        legacy=item.get("scopes") is None,
    )


def key_item(
    key: str,
    tenant_id: str,
    tenant_name: str,
    scopes: tuple[str, ...],
    *,
    created_at: str,
    role: str | None = None,
    customer_id: str | None = None,
    expires_at: float | None = None,
    tier: str = DEFAULT_TIER,
    home_region: str | None = None,
) -> dict[str, Any]:
    """The stored item of a new key (``pk``, hash only), carrying its tenant's tier and
    home region."""
    digest = hash_key(key)
    item: dict[str, Any] = {
        "pk": f"KEY#{digest}",
        "key_id": key_id_for(digest),
        "tenant_id": tenant_id,
        "tenant_name": tenant_name,
        "status": "active",
        "created_at": created_at,
        "scopes": list(scopes),
        "tier": check_tier(tier),
    }
    if home_region:
        item["home_region"] = home_region
    if role:
        item["role"] = role
    if customer_id:
        item["customer_id"] = customer_id
    if expires_at is not None:
        item["expires_at"] = int(expires_at)
    return item


@dataclass(frozen=True)
class Authentication:
    """The authorizer's answer about one key: the tenant, or why not (and whose key)."""

    tenant: Tenant | None
    reason: Refusal | None = None
    #: Known when the key item exists (a refusal is audited in that tenant's trail).
    tenant_id: str | None = None
    key_id: str | None = None


def judge(item: dict[str, Any] | None, now: float) -> Authentication:
    """The one rule: a key authenticates if its item exists, is active, its tenant is not
    suspended, and it has not expired."""
    if not item:
        return Authentication(None, "unknown_key")
    info = key_info(item, now)
    refused: Refusal | None = None
    if item.get("status") != "active":
        refused = "key_revoked"
    elif item.get("tenant_status") == "suspended":
        refused = "tenant_suspended"
    elif info.status == "expired":
        refused = "key_expired"
    if refused is not None:
        return Authentication(None, refused, info.tenant_id, info.key_id)
    tenant = Tenant(
        tenant_id=info.tenant_id,
        name=str(item.get("tenant_name") or "unnamed"),
        created_at=info.created_at,
        scopes=info.scopes,
        key_id=info.key_id,
        role=info.role,
        customer_id=info.customer_id,
        tier=stored_tier(item),
        home_region=item.get("home_region") or None,
    )
    return Authentication(tenant, None, info.tenant_id, info.key_id)


def stored_tier(item: dict[str, Any]) -> str:
    """An item's tier; an item from before tiers (or with an unknown one) is standard."""
    tier = str(item.get("tier") or DEFAULT_TIER)
    return tier if tier in TIERS else DEFAULT_TIER


def new_tenant(
    name: str,
    scopes: Iterable[str] | None,
    now: float,
    *,
    tier: str = DEFAULT_TIER,
    home_region: str | None = None,
) -> Tenant:
    return Tenant(
        tenant_id=uuid.uuid4().hex,
        name=name.strip(),
        created_at=now_iso(now),
        scopes=key_scopes(scopes),
        tier=tier,
        home_region=home_region,
    )


def tenant_item(tenant: Tenant) -> dict[str, Any]:
    """The stored ``TENANT#<id>`` item of a new tenant."""
    item: dict[str, Any] = {
        "pk": f"TENANT#{tenant.tenant_id}",
        "name": tenant.name,
        "status": tenant.status,
        "created_at": tenant.created_at,
        "tier": tenant.tier,
    }
    if tenant.home_region:
        item["home_region"] = tenant.home_region
    return item


def grace_seconds(grace_s: int | None) -> int:
    grace = DEFAULT_GRACE_S if grace_s is None else int(grace_s)
    if not 0 <= grace <= MAX_GRACE_S:
        raise ValueError(f"grace_s must be 0..{MAX_GRACE_S}")
    return grace


class KeyNotFound(StratusError):
    """No key with that id in the caller's tenant (another tenant's key looks the same)."""

    code = "not_found"
    status = 404


class TenantNotFound(StratusError):
    code = "tenant_not_found"
    status = 404


class TenantSuspended(StratusError):
    """A suspended tenant gets no new keys."""

    code = "tenant_suspended"
    status = 409


class WrongRegion(StratusError):
    """A key of a tenant homed in another region (``details.home_region``): the API
    Gateway ACCESS_DENIED response answers it, from the authorizer's Deny."""

    code = "wrong_region"
    status = 403


class KeyNotActive(StratusError):
    """Rotating a key that is revoked, expired, or already rotated."""

    code = "key_not_active"
    status = 409


@dataclass(frozen=True)
class Rotation:
    """A rotation: the old key (now expiring) and the new one (the key shown once)."""

    old: KeyInfo
    new: KeyInfo
    key: str

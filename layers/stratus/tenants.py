"""Tenants and their API keys.

A key is shown once, at creation, and stored only as its SHA-256 hash: keys
are 256 random bits, so a fast hash is safe here (no dictionary to attack) and
lets the authorizer find the tenant with one strongly consistent GetItem.
Items: ``TENANT#<id>`` (the tenant) and ``KEY#<hash>`` (one per key).

A key carries ``scopes`` (:data:`SCOPES`; a list attribute on its item). A
tenant's first key is its owner's and gets every scope; a key item written before
scopes existed (no ``scopes`` attribute) gets every scope except ``admin``: a
migration, not a lock-out.

:class:`TenantDirectory` is the port the runtime uses; :class:`TenantStore` is
its DynamoDB adapter and :class:`MemoryTenants` its in-memory fake.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

from stratus.ddb import Table

KEY_PREFIX = "sk-stratus-"
_KEY_BODY_LEN = 43  # token_urlsafe(32)
MAX_KEY_LEN = 128

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


def key_scopes(scopes: Iterable[str] | None) -> tuple[str, ...]:
    """``scopes`` checked against :data:`SCOPES`, in that order; None means every scope."""
    if scopes is None:
        return SCOPES
    wanted = set(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def _stored_scopes(item: dict[str, Any]) -> tuple[str, ...]:
    """A key item's scopes; an item without the attribute predates scopes (legacy)."""
    raw = item.get("scopes")
    if raw is None:
        return LEGACY_SCOPES
    return tuple(s for s in SCOPES if s in {str(v) for v in raw})


class Tenant(BaseModel):
    tenant_id: str
    name: str = Field(min_length=1, max_length=100)
    status: str = "active"
    created_at: str
    #: The scopes of the key that authenticated (or was created); empty when not known.
    scopes: tuple[str, ...] = ()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The key from an ``Authorization: Bearer <key>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LEN:
        return None
    return token


class TenantDirectory(Protocol):
    def create(self, name: str, scopes: Iterable[str] | None = None) -> tuple[Tenant, str]: ...
    def authenticate(self, key: str) -> Tenant | None: ...
    def is_active(self, tenant_id: str) -> bool: ...
    def tenant_ids(self) -> list[str]: ...


def _well_formed(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + _KEY_BODY_LEN


def _new_tenant(name: str, scopes: Iterable[str] | None) -> Tenant:
    return Tenant(
        tenant_id=uuid.uuid4().hex,
        name=name.strip(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        scopes=key_scopes(scopes),
    )


class TenantStore:
    """:class:`TenantDirectory` on the tenants table."""

    def __init__(self, table_name: str, dynamodb: Any = None) -> None:
        if dynamodb is None:  # scripts and tests; functions pass the runtime's client
            from stratus.aws import AwsClients

            dynamodb = AwsClients().client("dynamodb")
        self._table = Table(table_name, dynamodb)

    def create(self, name: str, scopes: Iterable[str] | None = None) -> tuple[Tenant, str]:
        """Create a tenant with one API key (``scopes``, default every scope); returns the
        key, which is never stored."""
        tenant = _new_tenant(name, scopes)
        key = new_api_key()
        put_new = "attribute_not_exists(pk)"
        self._table.transact(
            [
                self._table.put_op(
                    {
                        "pk": f"TENANT#{tenant.tenant_id}",
                        "name": tenant.name,
                        "status": tenant.status,
                        "created_at": tenant.created_at,
                    },
                    condition=put_new,
                ),
                self._table.put_op(
                    {
                        "pk": f"KEY#{hash_key(key)}",
                        "tenant_id": tenant.tenant_id,
                        "tenant_name": tenant.name,
                        "status": "active",
                        "created_at": tenant.created_at,
                        "scopes": list(tenant.scopes),
                    },
                    condition=put_new,
                ),
            ]
        )
        return tenant, key

    def authenticate(self, key: str) -> Tenant | None:
        """The active tenant owning ``key``, or None. Never raises for a bad key."""
        if not _well_formed(key):
            return None
        item = self._table.get({"pk": f"KEY#{hash_key(key)}"})
        if not item or item.get("status") != "active":
            return None
        return Tenant(
            tenant_id=str(item["tenant_id"]),
            name=str(item.get("tenant_name") or "unnamed"),
            created_at=str(item.get("created_at", "")),
            scopes=_stored_scopes(item),
        )

    def is_active(self, tenant_id: str) -> bool:
        item = self._table.get({"pk": f"TENANT#{tenant_id}"})
        return item is not None and item.get("status") == "active"

    def tenant_ids(self) -> list[str]:
        """Every tenant's id (a scan of the small tenants table: for sweeps, not requests)."""
        ids = (
            str(item["pk"]).removeprefix("TENANT#")
            for item in self._table.scan_all(
                filter="begins_with(pk, :t)", values={":t": "TENANT#"}, projection="pk"
            )
        )
        return sorted(ids)


class MemoryTenants:
    """:class:`TenantDirectory` in process (unit tests)."""

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        #: Key hash -> the key item's fields (``scopes`` absent: a legacy key).
        self._keys: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, scopes: Iterable[str] | None = None) -> tuple[Tenant, str]:
        tenant, key = _new_tenant(name, scopes), new_api_key()
        with self._lock:
            self._tenants[tenant.tenant_id] = tenant
            self._keys[hash_key(key)] = {
                "tenant_id": tenant.tenant_id,
                "scopes": list(tenant.scopes),
            }
        return tenant, key

    def add_legacy_key(self, tenant_id: str) -> str:
        """A key as made before scopes existed (tests of the migration)."""
        key = new_api_key()
        with self._lock:
            self._keys[hash_key(key)] = {"tenant_id": tenant_id}
        return key

    def authenticate(self, key: str) -> Tenant | None:
        if not _well_formed(key):
            return None
        with self._lock:
            item = self._keys.get(hash_key(key))
            tenant = self._tenants.get(item["tenant_id"]) if item else None
        if tenant is None or item is None:
            return None
        return tenant.model_copy(update={"scopes": _stored_scopes(item)})

    def is_active(self, tenant_id: str) -> bool:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
        return tenant is not None and tenant.status == "active"

    def tenant_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._tenants)

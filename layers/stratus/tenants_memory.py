"""The in-memory fake of :class:`stratus.tenants.TenantDirectory` (unit tests).

It keeps the same items the DynamoDB adapter writes (:func:`stratus.tenant_keys.key_item`)
and judges them with the same rule (:func:`stratus.tenant_keys.judge`), so the contract
suite (``tests/contract/test_tenant_directory.py``) holds for both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from stratus.tenant_keys import (
    Authentication,
    KeyInfo,
    KeyNotActive,
    KeyNotFound,
    Rotation,
    Tenant,
    TenantNotFound,
    TenantSuspended,
    check_binding,
    check_tier,
    grace_seconds,
    hash_key,
    judge,
    key_info,
    key_item,
    key_scopes,
    new_api_key,
    new_tenant,
    now_iso,
    stored_tier,
    well_formed,
)


class MemoryTenants:
    """:class:`stratus.tenants.TenantDirectory` in process."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._tenants: dict[str, Tenant] = {}
        #: ``KEY#<hash>`` -> the key item (``scopes`` absent: a legacy key).
        self._keys: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def create(
        self,
        name: str,
        scopes: Iterable[str] | None = None,
        *,
        tier: str = "standard",
        home_region: str | None = None,
    ) -> tuple[Tenant, str]:
        tenant = new_tenant(name, scopes, self._clock(), tier=tier, home_region=home_region)
        key = new_api_key(tenant.home_region)
        item = key_item(
            key,
            tenant.tenant_id,
            tenant.name,
            tenant.scopes,
            created_at=tenant.created_at,
            tier=tenant.tier,
            home_region=tenant.home_region,
        )
        with self._lock:
            self._tenants[tenant.tenant_id] = tenant
            self._keys[item["pk"]] = item
        return tenant.model_copy(update={"key_id": item["key_id"]}), key

    def add_legacy_key(self, tenant_id: str) -> str:
        """A key as made before scopes and key ids existed (tests of the migration)."""
        key = new_api_key()
        with self._lock:
            tenant = self._tenants[tenant_id]
            self._keys[f"KEY#{hash_key(key)}"] = {
                "pk": f"KEY#{hash_key(key)}",
                "tenant_id": tenant_id,
                "tenant_name": tenant.name,
                "status": "active",
                "created_at": "2026-01-01T00:00:00+00:00",
            }
        return key

    def check(self, key: str) -> Authentication:
        if not well_formed(key):
            return Authentication(None, "unknown_key")
        with self._lock:
            item = self._keys.get(f"KEY#{hash_key(key)}")
            item = dict(item) if item else None
        return judge(item, self._clock())

    def authenticate(self, key: str) -> Tenant | None:
        return self.check(key).tenant

    def is_active(self, tenant_id: str) -> bool:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
        return tenant is not None and tenant.status == "active"

    def tenant_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._tenants)

    # -- key lifecycle

    def _active_tenant(self, tenant_id: str) -> Tenant:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            raise TenantNotFound(f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id})
        if tenant.status != "active":
            raise TenantSuspended("the tenant is suspended", details={"tenant_id": tenant_id})
        return tenant

    def create_key(
        self,
        tenant_id: str,
        scopes: Iterable[str],
        *,
        role: str | None = None,
        customer_id: str | None = None,
        expires_at: float | None = None,
    ) -> tuple[KeyInfo, str]:
        granted = key_scopes(scopes)
        check_binding(role, customer_id)
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires_at must be in the future")
        with self._lock:
            tenant = self._active_tenant(tenant_id)
            key = new_api_key(tenant.home_region)
            item = key_item(
                key,
                tenant_id,
                tenant.name,
                granted,
                created_at=now_iso(now),
                role=role,
                customer_id=customer_id,
                expires_at=expires_at,
                tier=tenant.tier,
                home_region=tenant.home_region,
            )
            self._keys[item["pk"]] = item
        return key_info(item, now), key

    def _items(self, tenant_id: str) -> list[dict[str, Any]]:
        found = [i for i in self._keys.values() if i["tenant_id"] == tenant_id]
        return sorted(found, key=lambda i: str(i.get("created_at") or ""))

    def list_keys(self, tenant_id: str) -> list[KeyInfo]:
        now = self._clock()
        with self._lock:
            return [key_info(item, now) for item in self._items(tenant_id)]

    def _find(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        now = self._clock()
        for item in self._items(tenant_id):
            if key_info(item, now).key_id == key_id:
                return item
        raise KeyNotFound(f"no key {key_id!r}", details={"key_id": key_id})

    def revoke_key(self, tenant_id: str, key_id: str) -> KeyInfo:
        now = self._clock()
        with self._lock:
            item = self._find(tenant_id, key_id)
            if item.get("status") != "revoked":
                item.update(status="revoked", revoked_at=now_iso(now))
            return key_info(item, now)

    def rotate_key(self, tenant_id: str, key_id: str, grace_s: int | None = None) -> Rotation:
        grace = grace_seconds(grace_s)
        now = self._clock()
        with self._lock:
            old = self._find(tenant_id, key_id)
            key = new_api_key(old.get("home_region") or None)
            self._active_tenant(tenant_id)
            if judge(old, now).tenant is None or old.get("rotated_to"):
                raise KeyNotActive(
                    f"key {key_id!r} is not active (revoked, expired or already rotated)",
                    details={"key_id": key_id, "rotated_to": old.get("rotated_to")},
                )
            info = key_info(old, now)
            new = key_item(
                key,
                tenant_id,
                str(old.get("tenant_name") or "unnamed"),
                info.scopes,
                created_at=now_iso(now),
                role=info.role,
                customer_id=info.customer_id,
                tier=stored_tier(old),
                home_region=old.get("home_region") or None,
            )
            ends = now + grace
            if old.get("expires_at") is not None:
                ends = min(ends, float(old["expires_at"]))
            old.update(expires_at=int(ends), rotated_to=new["key_id"])
            self._keys[new["pk"]] = new
            return Rotation(old=key_info(old, now), new=key_info(new, now), key=key)

    # -- suspension

    def _set_status(self, tenant_id: str, status: str) -> int:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            if tenant is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id})
            self._tenants[tenant_id] = tenant.model_copy(update={"status": status})
            items = self._items(tenant_id)
            for item in items:
                if status == "suspended":
                    item["tenant_status"] = "suspended"
                else:
                    item.pop("tenant_status", None)
            return len(items)

    def suspend(self, tenant_id: str) -> int:
        return self._set_status(tenant_id, "suspended")

    def resume(self, tenant_id: str) -> int:
        return self._set_status(tenant_id, "active")

    def set_tier(self, tenant_id: str, tier: str) -> int:
        check_tier(tier)
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            if tenant is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id})
            self._tenants[tenant_id] = tenant.model_copy(update={"tier": tier})
            items = self._items(tenant_id)
            for item in items:
                item["tier"] = tier
            return len(items)

"""Tenants and their API keys: the :class:`TenantDirectory` port and its DynamoDB adapter.

Items of the tenants table: ``TENANT#<id>`` (the tenant: ``name``, ``status``
``active``/``suspended``, ``created_at``) and ``KEY#<sha256 of the key>`` (one per key;
the shape, the key id and the one rule that judges a key are in
:mod:`stratus.tenant_keys`).

**Listing a tenant's keys** uses the sparse global index ``tenant_keys``
(``tenant_id``, ``created_at``): only key items carry ``tenant_id``, so the index
holds exactly the keys, legacy ones included, and the table keeps its one-attribute
key (per-tenant items under the tenant's partition would need a sort key, which
cannot be added to a deployed table). Revoking, rotating and suspending find the key
items there (an eventually consistent read: a key made in the same second may be
missed by a suspension, which is idempotent and may be run again).

**The authorizer stays one round trip**: :meth:`TenantStore.check` is one strongly
consistent GetItem of the key item. A suspension writes ``tenant_status=suspended``
onto every key item of the tenant (and the tenant item); a resume removes it; a new
key is written only while its tenant is active (a condition check in the same
transaction). A tenant's ``tier`` and ``home_region`` are denormalised the same way
(``set_tier`` rewrites them like ``suspend``).

:class:`TenantStore` is the DynamoDB adapter; :class:`MemoryTenants`
(:mod:`stratus.tenants_memory`) the in-memory fake.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from stratus.ddb import ConditionFailed, Table, TransactionCancelled
from stratus.tenant_keys import (
    DEFAULT_GRACE_S,
    KEY_PREFIX,
    LEGACY_SCOPES,
    MAX_GRACE_S,
    MAX_KEY_LEN,
    SCOPES,
    TIERS,
    Authentication,
    KeyInfo,
    KeyNotActive,
    KeyNotFound,
    Rotation,
    Tenant,
    TenantNotFound,
    TenantSuspended,
    bearer_token,
    check_binding,
    check_tier,
    grace_seconds,
    hash_key,
    judge,
    key_id_for,
    key_info,
    key_item,
    key_scopes,
    new_api_key,
    new_tenant,
    now_iso,
    stored_tier,
    tenant_item,
    well_formed,
)
from stratus.tenants_memory import MemoryTenants

__all__ = [
    "DEFAULT_GRACE_S",
    "KEY_INDEX",
    "KEY_PREFIX",
    "LEGACY_SCOPES",
    "MAX_GRACE_S",
    "MAX_KEY_LEN",
    "SCOPES",
    "TIERS",
    "Authentication",
    "KeyInfo",
    "KeyNotActive",
    "KeyNotFound",
    "MemoryTenants",
    "Rotation",
    "Tenant",
    "TenantDirectory",
    "TenantNotFound",
    "TenantStore",
    "TenantSuspended",
    "bearer_token",
    "hash_key",
    "key_id_for",
    "key_scopes",
    "new_api_key",
]

#: The sparse index of key items by tenant (``infra.definitions.TENANTS``).
KEY_INDEX = "tenant_keys"


class TenantDirectory(Protocol):
    def create(
        self,
        name: str,
        scopes: Iterable[str] | None = None,
        *,
        tier: str = "standard",
        home_region: str | None = None,
    ) -> tuple[Tenant, str]: ...
    def authenticate(self, key: str) -> Tenant | None: ...
    def check(self, key: str) -> Authentication: ...
    def is_active(self, tenant_id: str) -> bool: ...
    def tenant_ids(self) -> list[str]: ...
    def create_key(
        self,
        tenant_id: str,
        scopes: Iterable[str],
        *,
        role: str | None = None,
        customer_id: str | None = None,
        expires_at: float | None = None,
    ) -> tuple[KeyInfo, str]: ...
    def list_keys(self, tenant_id: str) -> list[KeyInfo]: ...
    def revoke_key(self, tenant_id: str, key_id: str) -> KeyInfo: ...
    def rotate_key(self, tenant_id: str, key_id: str, grace_s: int | None = None) -> Rotation: ...
    def suspend(self, tenant_id: str) -> int: ...
    def resume(self, tenant_id: str) -> int: ...
    def set_tier(self, tenant_id: str, tier: str) -> int: ...


class TenantStore:
    """:class:`TenantDirectory` on the tenants table.

    Round trips: ``check``/``authenticate`` 1 (GetItem); ``create`` 1 (a transaction);
    ``create_key`` 2 (the tenant's GetItem, a transaction); ``list_keys`` 1 query page per
    100 keys or so; ``revoke_key`` and ``rotate_key`` the listing then 1 write;
    ``suspend``/``resume`` 1 + the listing + 1 write per key (operator actions).
    """

    def __init__(
        self, table_name: str, dynamodb: Any = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        if dynamodb is None:  # scripts and tests; functions pass the runtime's client
            from stratus.aws import AwsClients

            dynamodb = AwsClients().client("dynamodb")
        self._table = Table(table_name, dynamodb)
        self._clock = clock

    def create(
        self,
        name: str,
        scopes: Iterable[str] | None = None,
        *,
        tier: str = "standard",
        home_region: str | None = None,
    ) -> tuple[Tenant, str]:
        """Create a tenant with one API key (``scopes``, default every scope); returns the
        key, which is never stored. ``home_region``: the region of this table's stack (its
        keys name it, see :mod:`stratus.tenant_keys`)."""
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
        put_new = "attribute_not_exists(pk)"
        self._table.transact(
            [
                self._table.put_op(tenant_item(tenant), condition=put_new),
                self._table.put_op(item, condition=put_new),
            ]
        )
        return tenant.model_copy(update={"key_id": item["key_id"]}), key

    def check(self, key: str) -> Authentication:
        """Whether ``key`` authenticates, and why not. One GetItem; never raises for a bad key."""
        if not well_formed(key):
            return Authentication(None, "unknown_key")
        return judge(self._table.get({"pk": f"KEY#{hash_key(key)}"}), self._clock())

    def authenticate(self, key: str) -> Tenant | None:
        """The active tenant owning ``key`` (as seen through that key), or None."""
        return self.check(key).tenant

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

    # -- key lifecycle

    def create_key(
        self,
        tenant_id: str,
        scopes: Iterable[str],
        *,
        role: str | None = None,
        customer_id: str | None = None,
        expires_at: float | None = None,
    ) -> tuple[KeyInfo, str]:
        """A new key of an active tenant; the key is returned once and never stored."""
        granted = key_scopes(scopes)
        check_binding(role, customer_id)
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires_at must be in the future")
        tenant = self._table.get({"pk": f"TENANT#{tenant_id}"})
        if tenant is None:
            raise TenantNotFound(f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id})
        if tenant.get("status") != "active":
            raise TenantSuspended("the tenant is suspended", details={"tenant_id": tenant_id})
        home_region = tenant.get("home_region") or None
        key = new_api_key(home_region)
        item = key_item(
            key,
            tenant_id,
            str(tenant.get("name") or "unnamed"),
            granted,
            created_at=now_iso(now),
            role=role,
            customer_id=customer_id,
            expires_at=expires_at,
            tier=stored_tier(tenant),
            home_region=home_region,
        )
        try:
            self._table.transact(
                [
                    self._active_tenant_check(tenant_id),
                    self._table.put_op(item, condition="attribute_not_exists(pk)"),
                ]
            )
        except TransactionCancelled as cancelled:
            if cancelled.condition_failed_at(0):
                raise TenantSuspended(
                    "the tenant is suspended", details={"tenant_id": tenant_id}
                ) from None
            raise
        return key_info(item, now), key

    def _active_tenant_check(self, tenant_id: str) -> dict[str, Any]:
        return self._table.check_op(
            {"pk": f"TENANT#{tenant_id}"},
            "#s = :active",
            names={"#s": "status"},
            values={":active": "active"},
        )

    def _key_items(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        return self._table.query_all(
            "tenant_id = :t",
            index=KEY_INDEX,
            values={":t": tenant_id, ":k": "KEY#"},
            filter="begins_with(pk, :k)",
        )

    def list_keys(self, tenant_id: str) -> list[KeyInfo]:
        """The tenant's keys, oldest first (never a key or its hash)."""
        now = self._clock()
        return [key_info(item, now) for item in self._key_items(tenant_id)]

    def _find(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        now = self._clock()
        for item in self._key_items(tenant_id):
            if key_info(item, now).key_id == key_id:
                return item
        raise KeyNotFound(f"no key {key_id!r}", details={"key_id": key_id})

    def revoke_key(self, tenant_id: str, key_id: str) -> KeyInfo:
        """Revoke the key (idempotent: revoking a revoked key answers it again)."""
        item = self._find(tenant_id, key_id)
        if item.get("status") == "revoked":
            return key_info(item, self._clock())
        now = self._clock()
        try:
            updated = self._table.update(
                {"pk": item["pk"]},
                "SET #s = :revoked, revoked_at = :at",
                condition="tenant_id = :t",
                names={"#s": "status"},
                values={":revoked": "revoked", ":at": now_iso(now), ":t": tenant_id},
            )
        except ConditionFailed:  # the item vanished under us
            raise KeyNotFound(f"no key {key_id!r}", details={"key_id": key_id}) from None
        return key_info(updated, now)

    def rotate_key(self, tenant_id: str, key_id: str, grace_s: int | None = None) -> Rotation:
        """A new key with the old one's scopes, role and customer; the old one keeps working
        for ``grace_s`` (default :data:`DEFAULT_GRACE_S`), then stops. A key rotates once."""
        grace = grace_seconds(grace_s)
        old = self._find(tenant_id, key_id)
        now = self._clock()
        if judge(old, now).tenant is None or old.get("rotated_to"):
            raise KeyNotActive(
                f"key {key_id!r} is not active (revoked, expired or already rotated)",
                details={"key_id": key_id, "rotated_to": old.get("rotated_to")},
            )
        info = key_info(old, now)
        home_region = old.get("home_region") or None
        key = new_api_key(home_region)
        new = key_item(
            key,
            tenant_id,
            str(old.get("tenant_name") or "unnamed"),
            info.scopes,
            created_at=now_iso(now),
            role=info.role,
            customer_id=info.customer_id,
            tier=stored_tier(old),
            home_region=home_region,
        )
        ends = now + grace
        if old.get("expires_at") is not None:
            ends = min(ends, float(old["expires_at"]))
        try:
            self._table.transact(
                [
                    self._active_tenant_check(tenant_id),
                    self._table.put_op(new, condition="attribute_not_exists(pk)"),
                    self._table.update_op(
                        {"pk": old["pk"]},
                        "SET expires_at = :e, rotated_to = :n",
                        condition="#s = :active AND tenant_id = :t "
                        "AND attribute_not_exists(rotated_to)",
                        names={"#s": "status"},
                        values={
                            ":e": int(ends),
                            ":n": new["key_id"],
                            ":active": "active",
                            ":t": tenant_id,
                        },
                    ),
                ]
            )
        except TransactionCancelled as cancelled:
            if cancelled.condition_failed_at(0):
                raise TenantSuspended(
                    "the tenant is suspended", details={"tenant_id": tenant_id}
                ) from None
            if cancelled.condition_failed_at(2):  # a concurrent rotation or revocation won
                raise KeyNotActive(
                    f"key {key_id!r} is no longer active", details={"key_id": key_id}
                ) from None
            raise
        rotated = {**old, "expires_at": int(ends), "rotated_to": new["key_id"]}
        return Rotation(old=key_info(rotated, now), new=key_info(new, now), key=key)

    # -- suspension

    def _set_status(self, tenant_id: str, status: str) -> None:
        try:
            self._table.update(
                {"pk": f"TENANT#{tenant_id}"},
                "SET #s = :s",
                condition="attribute_exists(pk)",
                names={"#s": "status"},
                values={":s": status},
                returns="NONE",
            )
        except ConditionFailed:
            raise TenantNotFound(
                f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id}
            ) from None

    def suspend(self, tenant_id: str) -> int:
        """Suspend the tenant: its keys stop authenticating. Idempotent; returns how many key
        items were marked."""
        self._set_status(tenant_id, "suspended")
        marked = 0
        for item in self._key_items(tenant_id):
            self._mark(item["pk"], "SET tenant_status = :s", {":s": "suspended"})
            marked += 1
        return marked

    def resume(self, tenant_id: str) -> int:
        """Undo :meth:`suspend` (revoked and expired keys stay so). Idempotent."""
        self._set_status(tenant_id, "active")
        marked = 0
        for item in self._key_items(tenant_id):
            self._mark(item["pk"], "REMOVE tenant_status", None)
            marked += 1
        return marked

    def set_tier(self, tenant_id: str, tier: str) -> int:
        """Change the tenant's tier on its item and every key item (so the authorizer,
        and the feature flags segmenting on it, see it within the cache window).
        Idempotent; returns how many key items were marked."""
        check_tier(tier)
        try:
            self._table.update(
                {"pk": f"TENANT#{tenant_id}"},
                "SET tier = :t",
                condition="attribute_exists(pk)",
                values={":t": tier},
                returns="NONE",
            )
        except ConditionFailed:
            raise TenantNotFound(
                f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id}
            ) from None
        marked = 0
        for item in self._key_items(tenant_id):
            self._mark(item["pk"], "SET tier = :t", {":t": tier})
            marked += 1
        return marked

    def _mark(self, pk: str, expression: str, values: dict[str, Any] | None) -> None:
        with contextlib.suppress(ConditionFailed):  # deleted meanwhile: nothing to mark
            self._table.update(
                {"pk": pk},
                expression,
                condition="attribute_exists(pk)",
                values=values,
                returns="NONE",
            )

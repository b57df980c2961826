"""Per-tenant callback signing keys: created with the tenant, rotated with a rollover.

Each tenant signs its job callbacks with its own HMAC-SHA256 secret, so one
tenant's receiver can never forge another tenant's callbacks. A key is
``(kid, secret, created_at, valid_until)``; the signature header names the key
(``X-Stratus-Signature: t=<unix>,kid=<kid>,v1=<hex>``).

* :meth:`SigningKeys.create_for` gives a new tenant its first key (the secret is
  returned once; the CLI and the local cloud's provisioning call it);
* :meth:`SigningKeys.rotate` adds a new key and keeps the tenant's previous keys
  valid for ``grace_s`` more seconds: during the rollover both verify
  (:func:`stratus.jobs.verify` accepts any active key); the **newest** key signs.
  A tenant created before per-tenant keys has none: its callbacks are still signed
  with the stack-wide key (without a ``kid``) until its first ``rotate``, which is
  the migration;
* :meth:`SigningKeys.active` is what the callbacks function reads: one DynamoDB
  ``Query`` (the tenant's partition) per delivery attempt.

Storage: the ``callback_keys`` table (``pk = T#<tenant>``, ``sk = K#<kid>``),
encrypted at rest with KMS like every table of the stack; a retired key's item
expires (TTL) a day after its ``valid_until``, and is ignored from that instant.
The secret is never logged: :class:`SigningKey`'s ``repr`` leaves it out.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from stratus.ddb import ConditionFailed, Table

#: How long a rotated-out key stays valid by default (one day).
DEFAULT_GRACE_S = 86_400
#: The longest rollover allowed (30 days).
MAX_GRACE_S = 30 * 86_400
#: A retired key's item is deleted (TTL) this long after it stopped being valid.
EXPIRED_ITEM_TTL_S = 86_400


@dataclass(frozen=True)
class SigningKey:
    """One signing key of a tenant; ``secret`` is never part of its ``repr``."""

    kid: str
    secret: str = field(repr=False)
    created_at: float
    valid_until: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.valid_until is None or now < self.valid_until

    def public(self) -> dict[str, Any]:
        """The key without its secret (for listings and audit details)."""
        return {"kid": self.kid, "created_at": self.created_at, "valid_until": self.valid_until}


def new_key(now: float) -> SigningKey:
    return SigningKey(
        kid=f"cbk_{secrets.token_hex(6)}", secret=secrets.token_urlsafe(32), created_at=now
    )


class SigningKeyStore(Protocol):
    """Where the tenants' signing keys live."""

    def add(self, tenant_id: str, key: SigningKey) -> None:
        """Store a new key; ``ConditionFailed`` if its kid exists."""
        ...

    def keys(self, tenant_id: str) -> list[SigningKey]:
        """Every stored key of the tenant (expired ones included), oldest first."""
        ...

    def retire(self, tenant_id: str, kid: str, valid_until: float) -> None:
        """Make the key stop being valid at ``valid_until`` (never later than it already is)."""
        ...


class SigningKeys:
    """The tenants' callback signing keys (the domain; any :class:`SigningKeyStore`)."""

    def __init__(self, store: SigningKeyStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def create_for(self, tenant_id: str) -> SigningKey:
        """The tenant's first key (or another one; previous keys are left as they are)."""
        key = new_key(self.clock())
        self.store.add(tenant_id, key)
        return key

    def rotate(
        self, tenant_id: str, grace_s: int = DEFAULT_GRACE_S
    ) -> tuple[SigningKey, list[SigningKey]]:
        """A new key; the previous active ones stay valid ``grace_s`` more seconds.

        Returns ``(new key, previous keys as retired)``. ``grace_s=0`` retires them now
        (a leaked secret). A tenant without keys just gets its first one.
        """
        if not 0 <= grace_s <= MAX_GRACE_S:
            raise ValueError(f"grace_s must be 0..{MAX_GRACE_S}")
        now = self.clock()
        previous = [k for k in self.store.keys(tenant_id) if k.valid_at(now)]
        key = new_key(now)
        self.store.add(tenant_id, key)
        until = now + grace_s
        retired = []
        for old in previous:
            if old.valid_until is None or old.valid_until > until:
                self.store.retire(tenant_id, old.kid, until)
                old = replace(old, valid_until=until)
            retired.append(old)
        return key, retired

    def active(self, tenant_id: str) -> list[SigningKey]:
        """The tenant's keys valid now, newest first (the first one signs)."""
        now = self.clock()
        keys = [k for k in self.store.keys(tenant_id) if k.valid_at(now)]
        return sorted(keys, key=lambda k: (k.created_at, k.kid), reverse=True)

    def current(self, tenant_id: str) -> SigningKey | None:
        """The key that signs the tenant's callbacks now; None: the tenant has none yet."""
        active = self.active(tenant_id)
        return active[0] if active else None

    def secrets_for(self, tenant_id: str) -> dict[str, bytes]:
        """``kid -> secret`` of the active keys: what a receiver passes to ``verify``."""
        return {k.kid: k.secret.encode() for k in self.active(tenant_id)}


# -- adapters -------------------------------------------------------------------------------


def _pk(tenant_id: str) -> str:
    return f"T#{tenant_id}"


class DynamoSigningKeyStore:
    """:class:`SigningKeyStore` on the ``callback_keys`` table."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def add(self, tenant_id: str, key: SigningKey) -> None:
        self.table.put(
            {
                "pk": _pk(tenant_id),
                "sk": f"K#{key.kid}",
                "kid": key.kid,
                "secret": key.secret,
                "created_at": key.created_at,
            },
            condition="attribute_not_exists(pk)",
        )

    def keys(self, tenant_id: str) -> list[SigningKey]:
        items = self.table.query_all(
            "pk = :pk AND begins_with(sk, :k)", values={":pk": _pk(tenant_id), ":k": "K#"}
        )
        keys = [
            SigningKey(
                kid=str(item["kid"]),
                secret=str(item["secret"]),
                created_at=float(item["created_at"]),
                valid_until=float(item["valid_until"]) if "valid_until" in item else None,
            )
            for item in items
        ]
        return sorted(keys, key=lambda k: (k.created_at, k.kid))

    def retire(self, tenant_id: str, kid: str, valid_until: float) -> None:
        try:
            self.table.update(
                {"pk": _pk(tenant_id), "sk": f"K#{kid}"},
                "SET valid_until = :until, expires_at = :ttl",
                condition=(
                    "attribute_exists(pk) AND "
                    "(attribute_not_exists(valid_until) OR valid_until > :until)"
                ),
                values={":until": valid_until, ":ttl": int(valid_until) + EXPIRED_ITEM_TTL_S},
                returns="NONE",
            )
        except ConditionFailed:
            return  # already retired as early, or gone: nothing to shorten


class MemorySigningKeyStore:
    """:class:`SigningKeyStore` in memory (tests, the same contract as the table)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], SigningKey] = {}
        self._lock = threading.Lock()

    def add(self, tenant_id: str, key: SigningKey) -> None:
        with self._lock:
            if (tenant_id, key.kid) in self._keys:
                raise ConditionFailed()
            self._keys[(tenant_id, key.kid)] = key

    def keys(self, tenant_id: str) -> list[SigningKey]:
        with self._lock:
            found = [k for (t, _), k in self._keys.items() if t == tenant_id]
        return sorted(found, key=lambda k: (k.created_at, k.kid))

    def retire(self, tenant_id: str, kid: str, valid_until: float) -> None:
        with self._lock:
            key = self._keys.get((tenant_id, kid))
            if key is None or (key.valid_until is not None and key.valid_until <= valid_until):
                return
            self._keys[(tenant_id, kid)] = replace(key, valid_until=valid_until)

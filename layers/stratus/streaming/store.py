"""The streams table's port (issue 17): connections, connect tickets, streamed requests.

Items (one partition key ``pk``, TTL ``expires_at``):

* ``CONN#<connection id>``: the caller the ``$connect`` authorizer resolved (tenant, key
  id, scopes, role, customer id) and ``connected_at``; TTL 2 h.
* ``TICKET#<sha256 of the ticket>``: the issuing key's caller; TTL 60 s. Consumed by one
  conditional delete at connect (single use; an expired one is refused even before the
  TTL sweeper removes it).
* ``FRAME#<tenant>#<agent>#<client id>``: ``status`` ``running`` (with ``lease_until``:
  a run whose function died can be taken over after it) or ``done`` with the final
  ``frame``; TTL 24 h. The same client id resent gets the stored final frame (or
  ``request_in_progress`` while it runs) and never runs twice.

:class:`MemoryStreamStore` is the fake; :mod:`stratus.streaming.dynamo` the adapter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

CONNECTION_TTL_S = 2 * 3600
TICKET_TTL_S = 60
FRAME_TTL_S = 24 * 3600


@dataclass(frozen=True)
class StreamCaller:
    """Who a connection (or a ticket) acts for: the authorizer's context keys."""

    tenant_id: str
    key_id: str | None = None
    scopes: tuple[str, ...] = ()
    role: str | None = None
    customer_id: str | None = None
    #: The tenant's tier (feature flag segments); "standard" when not known.
    tier: str = "standard"

    def context(self) -> dict[str, str]:
        """The authorizer context (strings only; scopes space-separated)."""
        return {
            "tenant_id": self.tenant_id,
            "key_id": self.key_id or "",
            "scopes": " ".join(self.scopes),
            "role": self.role or "",
            "customer_id": self.customer_id or "",
            "tier": self.tier,
        }

    @classmethod
    def from_context(cls, context: dict[str, Any] | None) -> StreamCaller | None:
        """The caller from an authorizer context (None without a tenant)."""
        context = context or {}
        tenant = str(context.get("tenant_id") or "")
        if not tenant:
            return None
        scopes = context.get("scopes") or ""
        listed = scopes.split() if isinstance(scopes, str) else [str(s) for s in scopes]
        return cls(
            tenant_id=tenant,
            key_id=str(context.get("key_id") or "") or None,
            scopes=tuple(listed),
            role=str(context.get("role") or "") or None,
            customer_id=str(context.get("customer_id") or "") or None,
            tier=str(context.get("tier") or "") or "standard",
        )

    def item(self) -> dict[str, Any]:
        """The attributes stored for this caller (empty values left out)."""
        values = {
            "tenant_id": self.tenant_id,
            "key_id": self.key_id,
            "scopes": " ".join(self.scopes),
            "role": self.role,
            "customer_id": self.customer_id,
            "tier": self.tier,
        }
        return {name: value for name, value in values.items() if value}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> StreamCaller | None:
        return cls.from_context(item)


@dataclass(frozen=True)
class Claim:
    """What claiming a client id found: ``new`` (the caller runs it), ``running`` or
    ``done`` (with the stored final frame)."""

    status: Literal["new", "running", "done"]
    frame: dict[str, Any] | None = None


def frame_key(tenant_id: str, agent: str, client_id: str) -> str:
    return f"FRAME#{tenant_id}#{agent}#{client_id}"


class StreamStore(Protocol):
    def put_connection(self, connection_id: str, caller: StreamCaller, now: float) -> None: ...
    def get_connection(self, connection_id: str) -> StreamCaller | None: ...
    def delete_connection(self, connection_id: str) -> None: ...
    def put_ticket(self, ticket_hash: str, caller: StreamCaller, expires_at: int) -> None: ...
    def take_ticket(self, ticket_hash: str, now: float) -> StreamCaller | None: ...
    def claim(self, key: str, now: float, lease_s: int) -> Claim: ...
    def finish(self, key: str, frame: dict[str, Any], now: float) -> None: ...
    def release(self, key: str) -> None: ...


@dataclass
class MemoryStreamStore:
    """The in-memory fake of :class:`StreamStore` (same conditions, one lock)."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def put_connection(self, connection_id: str, caller: StreamCaller, now: float) -> None:
        with self._lock:
            self.items[f"CONN#{connection_id}"] = {
                **caller.item(),
                "connected_at": int(now),
                "expires_at": int(now) + CONNECTION_TTL_S,
            }

    def get_connection(self, connection_id: str) -> StreamCaller | None:
        with self._lock:
            item = self.items.get(f"CONN#{connection_id}")
        return StreamCaller.from_item(item) if item else None

    def delete_connection(self, connection_id: str) -> None:
        with self._lock:
            self.items.pop(f"CONN#{connection_id}", None)

    def put_ticket(self, ticket_hash: str, caller: StreamCaller, expires_at: int) -> None:
        with self._lock:
            self.items[f"TICKET#{ticket_hash}"] = {**caller.item(), "expires_at": expires_at}

    def take_ticket(self, ticket_hash: str, now: float) -> StreamCaller | None:
        with self._lock:
            item = self.items.get(f"TICKET#{ticket_hash}")
            if item is None or item["expires_at"] <= now:
                return None
            del self.items[f"TICKET#{ticket_hash}"]
        return StreamCaller.from_item(item)

    def claim(self, key: str, now: float, lease_s: int) -> Claim:
        with self._lock:
            item = self.items.get(key)
            if item is not None and item["expires_at"] > now:
                if item["status"] == "done":
                    return Claim("done", dict(item["frame"]))
                if item["lease_until"] > now:
                    return Claim("running")
            self.items[key] = {
                "status": "running",
                "lease_until": int(now) + lease_s,
                "expires_at": int(now) + FRAME_TTL_S,
            }
            return Claim("new")

    def finish(self, key: str, frame: dict[str, Any], now: float) -> None:
        with self._lock:
            self.items[key] = {
                "status": "done",
                "frame": frame,
                "expires_at": int(now) + FRAME_TTL_S,
            }

    def release(self, key: str) -> None:
        with self._lock:
            item = self.items.get(key)
            if item is not None and item["status"] == "running":
                del self.items[key]

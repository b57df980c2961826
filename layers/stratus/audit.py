"""The audit trail: security-relevant events, per tenant, in time order.

What is recorded (``AuditEvent.type``): ``key.created``, ``key.rotated``,
``key.revoked``, ``callback_key.rotated``, ``tenant.suspended``, ``tenant.resumed``,
``budget.limits_changed``, ``job.approved``, ``job.rejected``, ``tool.executed``,
``tool.denied``, ``request.refused`` (a missing scope, a suspended tenant),
``guardrail.blocked``, ``guardrail.flagged``, ``memory.deleted``, ``memory.forgotten``.
:data:`AUDIT_TYPES` is the registry:
``GET /v1/audit?type=`` accepts only these, so a new event type is added there.

Events of a request are buffered (per thread: one request per thread) and written
together by :meth:`AuditTrail.flush` after the answer is built: at most one write
per request, off the critical path. Events outside a request (the CLI, a sweep)
use :meth:`AuditTrail.record_now`. Every event is also logged as one structured
``audit`` line, so the function's log group holds the trail too (the CloudWatch
Logs export). An audit failure is logged and never fails the request.

:class:`AuditStore` is the port; :class:`MemoryAuditStore` its in-memory fake; the
DynamoDB adapter lives beside it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stratus.errors import ConfigurationError, StratusError
from stratus.observability import logger

#: The event types the runtime records (a store accepts any string of this shape).
AUDIT_TYPES = (
    "key.created",
    "key.rotated",
    "key.revoked",
    "callback_key.rotated",
    "tenant.suspended",
    "tenant.resumed",
    "budget.limits_changed",
    "job.approved",
    "job.rejected",
    "tool.executed",
    "tool.denied",
    "request.refused",
    "guardrail.blocked",
    "guardrail.flagged",
    "memory.deleted",
    "memory.forgotten",
)


_SEQUENCE = itertools.count()


def new_event_id(now: float) -> str:
    """Time-sortable: 13 hex digits of epoch milliseconds, a per-process sequence (events
    of one millisecond keep their order), then 6 random hex digits."""
    return f"{int(now * 1000):013x}{next(_SEQUENCE) % 16**6:06x}{uuid.uuid4().hex[:6]}"


def since_key(since: float) -> str:
    """The smallest event id at or after ``since`` (epoch seconds; millisecond precision)."""
    return f"{max(0, int(since * 1000)):013x}"


@dataclass(frozen=True)
class AuditEvent:
    tenant_id: str
    type: str
    #: Epoch seconds.
    at: float
    #: Who did it: a key id, ``operator`` (the CLI with AWS credentials), or ``system``.
    actor: str = "system"
    request_id: str | None = None
    #: Event-specific fields; never a secret, a key, or a tool's arguments in clear.
    details: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "tenant_id": self.tenant_id,
            "type": self.type,
            "at": self.at,
            "actor": self.actor,
            "request_id": self.request_id,
            "details": dict(self.details),
        }


class AuditStore(Protocol):
    def put_events(self, events: Sequence[AuditEvent]) -> None:
        """Write the events (one request for up to 25)."""
        ...

    def events(
        self,
        tenant_id: str,
        *,
        since: float | None = None,
        types: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[AuditEvent], str | None]:
        """The tenant's events, oldest first from ``since``; the next page's cursor."""
        ...


class MemoryAuditStore:
    """:class:`AuditStore` in process (unit tests)."""

    def __init__(self) -> None:
        self._events: dict[str, list[AuditEvent]] = {}
        self._lock = threading.Lock()
        self.writes = 0

    def put_events(self, events: Sequence[AuditEvent]) -> None:
        with self._lock:
            self.writes += 1
            for event in events:
                self._events.setdefault(event.tenant_id, []).append(event)

    def events(
        self,
        tenant_id: str,
        *,
        since: float | None = None,
        types: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[AuditEvent], str | None]:
        with self._lock:
            found = sorted(self._events.get(tenant_id, []), key=lambda e: e.event_id)
        lower = since_key(since) if since is not None else ""
        found = [
            e
            for e in found
            if e.event_id >= lower
            and (not types or e.type in types)
            and (cursor is None or e.event_id > cursor)
        ]
        page = found[:limit]
        more = len(found) > limit
        return page, (page[-1].event_id if more and page else None)


class AuditTrail:
    """Records events: buffered per request (:meth:`record`, :meth:`flush`) or at once."""

    def __init__(self, store: AuditStore | None, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._local = threading.local()

    def _event(
        self,
        tenant_id: str,
        type: str,
        *,
        actor: str,
        request_id: str | None,
        details: Mapping[str, Any] | None,
    ) -> AuditEvent:
        now = self.clock()
        return AuditEvent(
            tenant_id=tenant_id,
            type=type,
            at=now,
            actor=actor,
            request_id=request_id,
            details=dict(details or {}),
            event_id=new_event_id(now),
        )

    @property
    def pending(self) -> list[AuditEvent]:
        """This thread's buffered events (the current request's)."""
        buffer: list[AuditEvent] | None = getattr(self._local, "events", None)
        if buffer is None:
            buffer = []
            self._local.events = buffer
        return buffer

    def record(
        self,
        tenant_id: str,
        type: str,
        *,
        actor: str = "system",
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Buffer an event of the current request; :meth:`flush` writes it."""
        event = self._event(tenant_id, type, actor=actor, request_id=request_id, details=details)
        self.pending.append(event)
        return event

    def flush(self) -> int:
        """Write this thread's buffered events in one request (at most 25: a request that
        produced more writes them in as many requests); never raises. Returns how many."""
        events, self._local.events = list(self.pending), []
        if not events:
            return 0
        for event in events:
            logger.info("audit", extra={"audit": event.to_json()})
        if self.store is None:
            return len(events)
        try:
            for start in range(0, len(events), 25):
                self.store.put_events(events[start : start + 25])
        except Exception:
            logger.exception("writing the audit trail failed", extra={"events": len(events)})
        return len(events)

    def discard(self) -> None:
        """Drop this thread's buffer (a request that ends without its events)."""
        self._local.events = []

    def record_now(
        self,
        tenant_id: str,
        type: str,
        *,
        actor: str = "operator",
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Write one event at once (outside a request: the CLI, a sweep)."""
        event = self._event(tenant_id, type, actor=actor, request_id=request_id, details=details)
        logger.info("audit", extra={"audit": event.to_json()})
        if self.store is not None:
            try:
                self.store.put_events([event])
            except Exception:
                logger.exception("writing the audit trail failed", extra={"events": 1})
        return event


# -- reading the trail (GET /v1/audit, stratus audit) ----------------------------------

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: Without ``since``, a listing starts this long ago.
DEFAULT_WINDOW_S = 24 * 3600


class InvalidCursor(StratusError):
    """The cursor is not one this listing gave out, or another tenant's (the same
    answer as ``GET /v1/reviews``: the page it names is not found)."""

    code = "invalid_cursor"
    status = 404


def _tenant_tag(tenant_id: str) -> str:
    return hashlib.sha256(f"audit:{tenant_id}".encode()).hexdigest()[:16]


def encode_cursor(tenant_id: str, event_id: str) -> str:
    raw = json.dumps({"t": _tenant_tag(tenant_id), "e": event_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(tenant_id: str, cursor: str) -> str:
    """The event id a cursor continues after; ``invalid_cursor`` unless this tenant's."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after, tag = data["e"], data["t"]
    except (ValueError, binascii.Error, KeyError, TypeError):
        raise InvalidCursor("the cursor is not valid; pass next_cursor as given") from None
    if tag != _tenant_tag(tenant_id) or not isinstance(after, str) or not after.isalnum():
        raise InvalidCursor("the cursor is not valid for this tenant")
    return after


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def event_view(event: AuditEvent) -> dict[str, Any]:
    """An event as the API shows it (``at`` in ISO 8601, UTC)."""
    return {**event.to_json(), "at": iso(event.at)}


def list_events(
    trail: AuditTrail,
    tenant_id: str,
    *,
    since: float | None = None,
    types: Sequence[str] = (),
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """One page of ``tenant_id``'s trail, oldest first from ``since`` (default: 24 h back).

    Only that tenant's partition is read; a cursor is bound to the tenant. DynamoDB
    round trips: 1 query (up to 4 when a ``type`` filter skips items).
    """
    if trail.store is None:
        raise ConfigurationError("STRATUS_AUDIT_TABLE is not set for this function")
    after = decode_cursor(tenant_id, cursor) if cursor else None
    start = since if since is not None else trail.clock() - DEFAULT_WINDOW_S
    events, last = trail.store.events(
        tenant_id, since=start, types=tuple(types), limit=limit, cursor=after
    )
    return {
        "events": [event_view(e) for e in events],
        "next_cursor": encode_cursor(tenant_id, last) if last else None,
        "since": iso(start),
    }

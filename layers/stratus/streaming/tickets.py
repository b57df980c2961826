"""Connect tickets (issue 17): ``POST /v1/stream-tickets`` -> a 60 s, single-use ticket.

A browser cannot set an ``Authorization`` header on a WebSocket, and a key in a URL ends
up in access logs: the client trades its key for a ticket over REST and connects with
``?ticket=``. The ticket carries the issuing key's tenant, key id, scopes, role and end
customer; only its SHA-256 is stored. Round trips: issue one PutItem, consume one
conditional DeleteItem (a second use, or one after 60 s, finds nothing).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from stratus.streaming.store import TICKET_TTL_S, StreamCaller, StreamStore

TICKET_PREFIX = "stk_"
MAX_TICKET_LEN = 128


def ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class StreamTickets:
    def __init__(self, store: StreamStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def issue(self, caller: StreamCaller) -> tuple[str, str]:
        """A new ticket and when it expires (ISO 8601, UTC)."""
        ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
        expires_at = int(self._clock()) + TICKET_TTL_S
        self._store.put_ticket(ticket_hash(ticket), caller, expires_at)
        iso = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
        return ticket, iso

    def consume(self, ticket: str) -> StreamCaller | None:
        """The ticket's caller, once; None for an unknown, used or expired ticket."""
        if not ticket.startswith(TICKET_PREFIX) or len(ticket) > MAX_TICKET_LEN:
            return None
        return self._store.take_ticket(ticket_hash(ticket), self._clock())

""":class:`MemorySessionStore`: the session store in memory, for unit tests.

Plain dictionaries behind one lock, with the semantics of the DynamoDB store
(``tests/contract/test_session_store.py`` runs both): every write is atomic,
conditional writes fail the same way and raise the same exceptions.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from stratus.sessions.model import (
    MAX_STORED_CHARS,
    Head,
    LockBusy,
    LostLock,
    QueueEntry,
    SessionExists,
    SessionGone,
    SessionKey,
    StoredMessage,
    TurnCommit,
    TurnView,
)
from stratus.usage import Usage


@dataclass
class _Session:
    head: Head
    counter: int | None = None
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    entries: dict[int, QueueEntry] = field(default_factory=dict)
    summary: str | None = None


class MemorySessionStore:
    """:class:`~stratus.sessions.store.SessionStore` on dictionaries (one process)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}

    # -- helpers (call with the lock held)

    def _held(self, head: Head, owner: str) -> _Session:
        """The session if ``head.version`` is current and ``owner`` holds the lock."""
        found = self._sessions.get(head.key.pk)
        if found is None or found.head.version != head.version or found.head.lock_owner != owner:
            raise LostLock
        return found

    @staticmethod
    def _entry_of(found: _Session, ticket: int) -> QueueEntry:
        entry = found.entries.get(ticket)
        if entry is None:
            raise RuntimeError(f"no queue entry {ticket}")
        return entry

    # -- head

    def create(self, head: Head) -> None:
        with self._lock:
            if head.key.pk in self._sessions:
                raise SessionExists(head.key.session_id)
            stored = replace(
                head,
                metadata=json.loads(json.dumps(head.metadata, sort_keys=True)),
                version=1,
                turns=0,
                msg_count=0,
                done_ticket=0,
                lock_owner=None,
                lock_until_ms=0,
                usage=Usage(),
                cost_usd=Decimal(0),
                summary_upto=0,
                pending_tokens=0,
            )
            self._sessions[head.key.pk] = _Session(stored)

    def head(self, key: SessionKey) -> Head | None:
        with self._lock:
            found = self._sessions.get(key.pk)
            return copy.deepcopy(found.head) if found else None

    # -- tickets and the lock

    def read_turn(self, key: SessionKey, *, limit: int) -> TurnView:
        with self._lock:
            found = self._sessions.get(key.pk)
            if found is None:
                return TurnView(head=None)
            newest = sorted(found.messages)[-limit:]
            return TurnView(
                head=copy.deepcopy(found.head),
                last_ticket=found.counter or 0,
                summary=found.summary,
                summary_upto=found.head.summary_upto if found.summary is not None else 0,
                messages=tuple(found.messages[i] for i in newest),
            )

    def take_ticket(
        self,
        key: SessionKey,
        message: str,
        request_id: str,
        now_s: float,
        ends_at: int,
        *,
        last: int | None = None,
    ) -> int:
        del last  # one lock: the counter is always read under it
        with self._lock:
            found = self._sessions.get(key.pk)
            if found is None or not found.head.expires_at > int(now_s):
                raise SessionGone
            ticket = (found.counter or 0) + 1
            found.counter = ticket
            found.entries[ticket] = QueueEntry(ticket, "queued", message, request_id)
            return ticket

    def take_ticket_and_lock(
        self,
        head: Head,
        message: str,
        request_id: str,
        now_s: float,
        *,
        last: int,
        owner: str,
        lease_s: int,
    ) -> tuple[int, Head] | None:
        now_ms = int(now_s * 1000)
        with self._lock:
            found = self._sessions.get(head.key.pk)
            if found is None or (found.counter or 0) != last:
                return None
            stored = found.head
            free = stored.lock_owner is None or stored.lock_until_ms < now_ms
            if stored.version != head.version or not stored.expires_at > int(now_s) or not free:
                return None
            ticket = last + 1
            found.counter = ticket
            found.entries[ticket] = QueueEntry(ticket, "queued", message, request_id)
            found.head = replace(
                stored,
                lock_owner=owner,
                lock_until_ms=now_ms + lease_s * 1000,
                version=stored.version + 1,
            )
            return ticket, copy.deepcopy(found.head)

    def acquire_lock(self, key: SessionKey, owner: str, now_s: float, lease_s: int) -> Head:
        now_ms = int(now_s * 1000)
        with self._lock:
            found = self._sessions.get(key.pk)
            if found is None:
                raise SessionGone
            head = found.head
            free = head.lock_owner is None or head.lock_until_ms < now_ms
            if not (head.expires_at > int(now_s) and free):
                if head.expired(now_s):
                    raise SessionGone
                raise LockBusy(copy.deepcopy(head))
            found.head = replace(
                head,
                lock_owner=owner,
                lock_until_ms=now_ms + lease_s * 1000,
                version=head.version + 1,
            )
            return copy.deepcopy(found.head)

    def release_lock(self, key: SessionKey, owner: str) -> None:
        with self._lock:
            found = self._sessions.get(key.pk)
            if found is not None and found.head.lock_owner == owner:
                found.head = replace(
                    found.head, lock_owner=None, lock_until_ms=0, version=found.head.version + 1
                )

    # -- queue entries

    def entry(self, key: SessionKey, ticket: int) -> QueueEntry | None:
        with self._lock:
            found = self._sessions.get(key.pk)
            entry = found.entries.get(ticket) if found else None
            return copy.deepcopy(entry)

    def _set_status(self, key: SessionKey, ticket: int, status: Any, allowed: set[str]) -> bool:
        with self._lock:
            found = self._sessions.get(key.pk)
            entry = found.entries.get(ticket) if found else None
            if found is None or entry is None or entry.status not in allowed:
                return False
            found.entries[ticket] = replace(entry, status=status)
            return True

    def claim_entry(self, key: SessionKey, ticket: int) -> bool:
        return self._set_status(key, ticket, "running", {"queued", "running"})

    def cancel_entry(self, key: SessionKey, ticket: int) -> bool:
        return self._set_status(key, ticket, "cancelled", {"queued"})

    # -- messages and summary

    def messages(
        self, key: SessionKey, *, after: int, limit: int, newest_first: bool
    ) -> list[StoredMessage]:
        with self._lock:
            found = self._sessions.get(key.pk)
            indices = sorted(i for i in (found.messages if found else {}) if i > after)
            chosen = indices[-limit:] if newest_first else indices[:limit]
            return [found.messages[i] for i in chosen] if found else []

    def summary(self, key: SessionKey) -> str | None:
        with self._lock:
            found = self._sessions.get(key.pk)
            return found.summary if found else None

    def save_summary(
        self, head: Head, owner: str, text: str, upto: int, folded_tokens: int
    ) -> Head:
        with self._lock:
            found = self._held(head, owner)
            found.summary = text[:MAX_STORED_CHARS]
            found.head = found.head.summarized(upto, folded_tokens)
        return head.summarized(upto, folded_tokens)

    def commit_turn(self, head: Head, owner: str, commit: TurnCommit) -> Head:
        with self._lock:
            found = self._held(head, owner)
            if any(m.index in found.messages for m in commit.messages):
                raise RuntimeError("a message with this index is already stored")
            if commit.ticket is not None:
                entry = self._entry_of(found, commit.ticket)
                result = copy.deepcopy(commit.result)
                found.entries[commit.ticket] = replace(
                    entry, status="done", message=None, result=result
                )
            for message in commit.messages:
                found.messages[message.index] = message
            found.head = found.head.committed(commit)
        return head.committed(commit)

    def finish_entry(
        self,
        head: Head,
        owner: str,
        ticket: int,
        *,
        error: dict[str, Any] | None,
        release: bool,
    ) -> Head:
        with self._lock:
            found = self._held(head, owner)
            if error is not None:
                entry = self._entry_of(found, ticket)
                found.entries[ticket] = replace(entry, status="failed", error=copy.deepcopy(error))
            found.head = found.head.finished(ticket, release=release)
        return head.finished(ticket, release=release)

    def delete(self, key: SessionKey) -> None:
        with self._lock:
            if self._sessions.pop(key.pk, None) is None:
                raise SessionGone

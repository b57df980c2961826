"""The ports of the session service: where it stores, and what runs a turn.

:class:`~stratus.sessions.dynamo.DynamoSessionStore` implements it on DynamoDB,
:class:`~stratus.sessions.memory.MemorySessionStore` in memory (unit tests); both
pass the same contract tests (``tests/contract/test_session_store.py``).

Every write that needs the lock is conditional on the head's ``version`` (the one
the lock or the previous write gave the caller) and on ``lock_owner``; when that
does not hold the store raises :class:`~stratus.sessions.model.LostLock` and
writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stratus.agents import ToolContext
from stratus.deadline import Deadline
from stratus.sessions.model import (
    Head,
    QueueEntry,
    SessionKey,
    StoredMessage,
    TurnCommit,
    TurnView,
)


class SessionStore(Protocol):
    """What the session service needs from storage."""

    def create(self, head: Head) -> None:
        """Store a new head (version 1, no turns); ``SessionExists`` if the key is taken."""
        ...

    def head(self, key: SessionKey) -> Head | None:
        """The head as stored (expired or not), None if there is none."""
        ...

    def read_turn(self, key: SessionKey, *, limit: int) -> TurnView:
        """In one round trip: the head (None if there is none), the last ticket, the
        summary and the newest ``limit`` messages (whatever the summary covers)."""
        ...

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
        """Queue ``message`` under the next ticket number; ``SessionGone`` if no live head.

        ``last`` is the last ticket as the caller read it (``TurnView.last_ticket``): a
        hint that saves reading the counter; a stale hint costs a retry, never a wrong
        or duplicate ticket.
        """
        ...

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
        """Ticket ``last + 1`` with its queue entry, and the lock, in one atomic write.

        Only if ``last`` is still the last ticket, ``head`` is still the stored head
        (its ``version``), the session is live and the lock free or expired; then the
        ticket and the head as ``acquire_lock`` would return it. Otherwise nothing is
        written and the answer is None (the caller takes a ticket, then waits for the lock).
        """
        ...

    def acquire_lock(self, key: SessionKey, owner: str, now_s: float, lease_s: int) -> Head:
        """Take the lock if free or expired (version + 1); ``LockBusy`` / ``SessionGone``."""
        ...

    def release_lock(self, key: SessionKey, owner: str) -> None:
        """Free the lock if ``owner`` holds it; otherwise do nothing."""
        ...

    def entry(self, key: SessionKey, ticket: int) -> QueueEntry | None: ...

    def claim_entry(self, key: SessionKey, ticket: int) -> bool:
        """Mark a queued (or abandoned running) entry running; False if it is neither."""
        ...

    def cancel_entry(self, key: SessionKey, ticket: int) -> bool:
        """Withdraw a queued entry; False if it is no longer queued."""
        ...

    def messages(
        self, key: SessionKey, *, after: int, limit: int, newest_first: bool
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages with index > ``after``, the newest or the oldest ones,
        returned oldest first."""
        ...

    def summary(self, key: SessionKey) -> str | None: ...

    def save_summary(
        self, head: Head, owner: str, text: str, upto: int, folded_tokens: int
    ) -> Head: ...

    def commit_turn(self, head: Head, owner: str, commit: TurnCommit) -> Head: ...

    def finish_entry(
        self,
        head: Head,
        owner: str,
        ticket: int,
        *,
        error: dict[str, Any] | None,
        release: bool,
    ) -> Head:
        """Mark ``ticket`` processed without a turn: failed (with ``error``) or skipped."""
        ...

    def delete(self, key: SessionKey) -> None:
        """Delete the head, then every other item; ``SessionGone`` if there is no head."""
        ...


class TurnRunner(Protocol):
    """What runs one agent turn (``stratus.runner.AgentRunner``)."""

    def run(
        self,
        user_input: str | dict[str, Any],
        *,
        ctx: ToolContext,
        deadline: Deadline | None = None,
        history: Sequence[dict[str, Any]] = (),
    ) -> Any: ...

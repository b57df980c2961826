"""The session data model: keys, the head, messages, queue entries, a turn's commit.

Plain values shared by the service and every :class:`~stratus.sessions.store.SessionStore`
implementation, and the exceptions a store raises for the service to act on.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from stratus.errors import StratusError
from stratus.tokens import chat_message_tokens
from stratus.usage import Usage

#: A stored message text is cut here (UTF-8: at most 128 KB), so no item nears 400 KB.
MAX_STORED_CHARS = 32_000
#: Session metadata (JSON) is at most this many bytes.
MAX_METADATA_BYTES = 4_096

HEAD_SK = "H"
COUNTER_SK = "N"
SUMMARY_SK = "S"
MSG_PREFIX = "M#"
QUEUE_PREFIX = "Q#"

Role = Literal["user", "assistant"]
EntryStatus = Literal["queued", "running", "done", "failed", "cancelled"]


def iso(epoch_s: float) -> str:
    return (
        datetime.datetime.fromtimestamp(epoch_s, tz=datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def msg_sk(index: int) -> str:
    return f"{MSG_PREFIX}{index:010d}"


def queue_sk(ticket: int) -> str:
    return f"{QUEUE_PREFIX}{ticket:010d}"


@dataclass(frozen=True)
class SessionKey:
    tenant_id: str
    agent: str
    session_id: str

    @property
    def pk(self) -> str:
        return f"{self.tenant_id}#{self.agent}#{self.session_id}"

    @classmethod
    def from_pk(cls, pk: str) -> SessionKey:
        tenant, agent, session_id = pk.split("#", 2)
        return cls(tenant, agent, session_id)


@dataclass(frozen=True)
class Head:
    """The session head: counters, totals, expiry, the turn lock and the summary position."""

    key: SessionKey
    created_ms: int
    metadata: dict[str, Any]
    version: int = 0
    turns: int = 0
    msg_count: int = 0
    done_ticket: int = 0
    lock_owner: str | None = None
    lock_until_ms: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    ttl_s: int = 86_400
    expires_at: int = 0
    ends_at: int = 0
    summary_upto: int = 0
    pending_tokens: int = 0

    def expired(self, now_s: float) -> bool:
        return now_s >= self.expires_at

    def locked(self, now_ms: int) -> bool:
        return self.lock_owner is not None and self.lock_until_ms > now_ms

    def committed(self, commit: TurnCommit) -> Head:
        """This head after ``commit`` (a store writes exactly this)."""
        return replace(
            self,
            version=self.version + 1,
            turns=commit.turns,
            msg_count=self.msg_count + len(commit.messages),
            usage=commit.usage,
            cost_usd=commit.cost_usd,
            pending_tokens=commit.pending_tokens,
            expires_at=commit.expires_at,
            done_ticket=commit.ticket if commit.ticket is not None else self.done_ticket,
            lock_owner=None if commit.release else self.lock_owner,
            lock_until_ms=0 if commit.release else commit.lock_until_ms,
        )

    def finished(self, ticket: int, *, release: bool) -> Head:
        """This head after ``ticket`` was processed without a turn."""
        return replace(
            self,
            version=self.version + 1,
            done_ticket=ticket,
            lock_owner=None if release else self.lock_owner,
            lock_until_ms=0 if release else self.lock_until_ms,
        )

    def summarized(self, upto: int, folded_tokens: int) -> Head:
        """This head after the messages through ``upto`` were folded into the summary."""
        pending = max(0, self.pending_tokens - folded_tokens)
        return replace(self, version=self.version + 1, summary_upto=upto, pending_tokens=pending)


@dataclass(frozen=True)
class StoredMessage:
    index: int
    role: Role
    content: str
    turn: int
    created_ms: int
    tokens: int
    truncated: bool = False
    #: The release that wrote an assistant message (None: a user message, or older items).
    release: str | None = None

    @classmethod
    def new(
        cls,
        index: int,
        role: Role,
        content: str,
        turn: int,
        created_ms: int,
        *,
        release: str | None = None,
    ) -> StoredMessage:
        """A message with its token estimate (:mod:`stratus.tokens`), cut to the stored size."""
        stored = content[:MAX_STORED_CHARS]
        return cls(
            index,
            role,
            stored,
            turn,
            created_ms,
            chat_message_tokens(role, stored),
            truncated=len(content) > MAX_STORED_CHARS,
            release=release,
        )

    def item(self, sid: str, expires_at: int) -> dict[str, Any]:
        """The DynamoDB item of this message in session partition ``sid``."""
        item: dict[str, Any] = {
            "sid": sid,
            "sk": msg_sk(self.index),
            "index": self.index,
            "role": self.role,
            "content": self.content,
            "turn": self.turn,
            "created_ms": self.created_ms,
            "tokens": self.tokens,
            "expires_at": expires_at,
        }
        if self.truncated:
            item["truncated"] = True
        if self.release:
            item["release"] = self.release
        return item


@dataclass(frozen=True)
class QueueEntry:
    ticket: int
    status: EntryStatus
    message: str | None
    request_id: str
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class TurnCommit:
    """What a finished turn writes, atomically."""

    messages: tuple[StoredMessage, ...]
    turns: int
    usage: Usage
    cost_usd: Decimal
    pending_tokens: int
    expires_at: int
    lock_until_ms: int
    release: bool
    ticket: int | None = None
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class TurnView:
    """What a turn reads up front, in one round trip: the head, the ticket counter, the
    summary and the newest messages (at most the context window's ``limit``).

    Read before the lock, so possibly stale by the time the turn runs:
    :meth:`window` and :meth:`summary_for` answer only when the view holds exactly
    what a read under the locked head would return, and None otherwise (then the
    turn reads again). Messages are immutable once committed, so the check is on
    indices: every message from the window's first index to ``head.msg_count``.
    """

    head: Head | None
    #: The last ticket taken (0: none yet).
    last_ticket: int = 0
    summary: str | None = None
    #: The last message index the stored summary covers (0: no summary).
    summary_upto: int = 0
    #: The newest messages read, oldest first.
    messages: tuple[StoredMessage, ...] = ()

    def window(self, head: Head, limit: int) -> list[StoredMessage] | None:
        """The newest ``limit`` messages after ``head.summary_upto``, oldest first; None if
        this view does not hold every one of them."""
        first = max(head.summary_upto, head.msg_count - limit) + 1
        wanted = [m for m in self.messages if first <= m.index <= head.msg_count]
        if [m.index for m in wanted] != list(range(first, head.msg_count + 1)):
            return None
        return wanted

    def summary_for(self, head: Head) -> tuple[bool, str | None]:
        """(known, text): the summary ``head`` points at, if this view holds it."""
        if not head.summary_upto:
            return True, None
        if self.summary is not None and self.summary_upto == head.summary_upto:
            return True, self.summary
        return False, None


class LockBusy(Exception):
    """The lock is held by a live turn; ``head`` is the head as it was."""

    def __init__(self, head: Head) -> None:
        super().__init__("session lock is held")
        self.head = head


class SessionGone(Exception):
    """The head does not exist (never did, deleted) or has expired."""


class SessionExists(Exception):
    """``create`` found a head with that key already."""


class LostLock(Exception):
    """A conditional head write failed: another turn owns the session now."""


class TurnFailed(Exception):
    """A turn's model call failed; ``head`` is the head the turn holds by then (a summary
    saved before the call moved its version on)."""

    def __init__(self, error: StratusError, head: Head) -> None:
        super().__init__(str(error))
        self.error = error
        self.head = head


def _error_class(code: str) -> type[StratusError]:
    stack: list[type[StratusError]] = [StratusError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls
        stack.extend(cls.__subclasses__())
    return StratusError


def raise_stored(error: dict[str, Any]) -> None:
    """Raise the error a failed turn stored in its queue entry, as its own class."""
    cls = _error_class(str(error.get("code", "")))
    raise cls(str(error.get("message", "the turn failed")), details=error.get("details") or None)

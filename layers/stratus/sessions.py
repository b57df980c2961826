"""Stateful sessions: conversation state any Lambda instance can read, correct under concurrency.

Storage (one DynamoDB partition per session, ``sid = <tenant>#<agent>#<session id>``):

* ``H``: the head: owner, agent, version, turn and message counts, usage and cost
  totals, expiry, the turn lock (owner + lease), the summary position and the
  number of the last processed ticket. Small and of fixed size.
* ``M#<index>``: one item per message (user or assistant), ordered by index.
* ``S``: the rolling summary of the turns before ``summary_upto``.
* ``N``: the ticket counter; ``Q#<ticket>``: a message waiting for its turn (``enqueue``).

Every head write is conditional: the lock is taken only if it is free or its
lease ran out; a turn commits its two messages, the head (``version`` must be
the one the lock gave it) and its queue entry in one ``TransactWriteItems``.
A turn whose Lambda died leaves a lock that expires; the next holder bumps the
version, so a late commit of the dead turn can never apply.

Ordering (``enqueue``): a message takes ticket ``n`` in the same transaction
that stores it as ``Q#n``, so a ticket never exists without its message. The
lock holder processes tickets strictly in order (``done_ticket + 1`` first),
whoever sent them: a waiter that died still has its message answered, in line.
A waiter that runs out of ``enqueue_wait_s`` withdraws its message (``Q#n``
becomes ``cancelled``, skipped by the processor) and answers 409
``session_busy``: a 409 always means "not applied", so a retry is safe.

Context: the prompt holds the system prompt, the rolling summary, the newest
unsummarised turns that fit ``context_token_budget`` and the new message.
Tokens are *estimated* deterministically: ``4 + ceil(len(text) / 4)`` per
message. Once the unsummarised part exceeds ``summarize_after_tokens`` (or
``max_recent_messages``), the older unsummarised turns are folded into the
summary by a cheap-tier call and the summary is stored; the messages stay
readable. A turn reads the head, the summary and at most
``max_recent_messages`` messages (twice that when it summarises), however long
the session is.

Nothing here knows Lambda or HTTP.
"""

from __future__ import annotations

import datetime
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

from stratus.agents import AgentSpec, CallScope, Limits, SessionPolicy, ToolContext
from stratus.config import Settings
from stratus.deadline import Deadline, NoDeadline
from stratus.errors import (
    ConfigurationError,
    MessageTooLarge,
    PayloadTooLarge,
    SessionBusy,
    SessionNotFound,
    StratusError,
)
from stratus.observability import logger
from stratus.usage import Usage

#: A stored message text is cut here (UTF-8: at most 128 KB), so no item nears 400 KB.
MAX_STORED_CHARS = 32_000
#: Session metadata (JSON) is at most this many bytes.
MAX_METADATA_BYTES = 4_096
#: Each folded message is cut to this many characters in the summariser's input.
SUMMARY_INPUT_MESSAGE_CHARS = 2_000
#: Token estimate overhead per chat message (what the role and framing cost).
TOKENS_PER_MESSAGE = 4
#: A turn is not started with less time than this left before the deadline margin.
MIN_TURN_S = 3.0

HEAD_SK = "H"
COUNTER_SK = "N"
SUMMARY_SK = "S"
_MSG = "M#"
_QUEUE = "Q#"
_LAST = "9999999999"

Role = Literal["user", "assistant"]
EntryStatus = Literal["queued", "running", "done", "failed", "cancelled"]


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate of one chat message: 4 + one per started 4 characters."""
    return TOKENS_PER_MESSAGE + -(-len(text) // 4)


def iso(epoch_s: float) -> str:
    return (
        datetime.datetime.fromtimestamp(epoch_s, tz=datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def msg_sk(index: int) -> str:
    return f"{_MSG}{index:010d}"


def queue_sk(ticket: int) -> str:
    return f"{_QUEUE}{ticket:010d}"


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class SessionKey:
    tenant_id: str
    agent: str
    session_id: str

    @property
    def pk(self) -> str:
        return f"{self.tenant_id}#{self.agent}#{self.session_id}"


@dataclass(frozen=True)
class Head:
    """The session head item."""

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


@dataclass(frozen=True)
class StoredMessage:
    index: int
    role: Role
    content: str
    turn: int
    created_ms: int
    tokens: int
    truncated: bool = False

    def item(self, sid: str, expires_at: int) -> dict[str, Any]:
        """The DynamoDB item of this message in session partition ``sid``."""
        item = {
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


class LockBusy(Exception):
    """The lock is held by a live turn; ``head`` is the head as it was."""

    def __init__(self, head: Head) -> None:
        super().__init__("session lock is held")
        self.head = head


class SessionGone(Exception):
    """The head does not exist (never did, deleted) or has expired."""


class LostLock(Exception):
    """A conditional head write failed: another turn owns the session now."""


# --------------------------------------------------------------------------- store


class SessionStore(Protocol):
    """What the session service needs from storage; :class:`DynamoSessionStore` implements it."""

    def create(self, head: Head) -> None: ...
    def head(self, key: SessionKey) -> Head | None: ...
    def take_ticket(
        self, key: SessionKey, message: str, request_id: str, now_s: float, ends_at: int
    ) -> int: ...
    def acquire_lock(self, key: SessionKey, owner: str, now_s: float, lease_s: int) -> Head: ...
    def release_lock(self, key: SessionKey, owner: str) -> None: ...
    def entry(self, key: SessionKey, ticket: int) -> QueueEntry | None: ...
    def claim_entry(self, key: SessionKey, ticket: int) -> bool: ...
    def cancel_entry(self, key: SessionKey, ticket: int) -> bool: ...
    def messages(
        self, key: SessionKey, *, after: int, limit: int, newest_first: bool
    ) -> list[StoredMessage]: ...
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
    ) -> Head: ...
    def delete(self, key: SessionKey) -> None: ...


def _serializer() -> tuple[Any, Any]:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


class DynamoSessionStore:
    """:class:`SessionStore` on one DynamoDB table (the low-level client: thread-safe)."""

    def __init__(
        self,
        table_name: str,
        client: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not table_name:
            raise ConfigurationError("STRATUS_SESSIONS_TABLE is not set for this function")
        self.table_name = table_name
        self._client = client
        self._sleep = sleep
        self._ser, self._des = _serializer()

    # -- plumbing

    @property
    def client(self) -> Any:
        if self._client is not None:
            return self._client()
        from stratus import aws

        return aws.client("dynamodb")

    def _av(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._ser.serialize(v) for k, v in values.items()}

    def _item(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._ser.serialize(v) for k, v in values.items() if v is not None}

    def _plain(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: self._des.deserialize(v) for k, v in item.items()}

    def _key(self, key: SessionKey, sk: str) -> dict[str, Any]:
        return {"sid": {"S": key.pk}, "sk": {"S": sk}}

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    @staticmethod
    def _reasons(exc: Exception) -> list[str]:
        reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
        return [str(r.get("Code") or "None") for r in reasons]

    def _transact(self, items: list[dict[str, Any]], *, head_at: int) -> None:
        """One transaction; a failed head condition is ``LostLock``; conflicts are retried."""
        for attempt in range(8):
            try:
                self.client.transact_write_items(TransactItems=items)
                return
            except Exception as exc:
                if self._code(exc) != "TransactionCanceledException":
                    raise
                reasons = self._reasons(exc)
                if len(reasons) > head_at and reasons[head_at] == "ConditionalCheckFailed":
                    raise LostLock from exc
                if "ConditionalCheckFailed" in reasons or attempt == 7:
                    raise
                self._sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    # -- head

    def _head(self, item: dict[str, Any], key: SessionKey | None = None) -> Head:
        v = self._plain(item)
        if key is None:
            tenant, agent, session_id = str(v["sid"]).split("#", 2)
            key = SessionKey(tenant, agent, session_id)
        return Head(
            key=key,
            created_ms=int(v["created_ms"]),
            metadata=json.loads(v.get("metadata") or "{}"),
            version=int(v.get("version", 0)),
            turns=int(v.get("turns", 0)),
            msg_count=int(v.get("msg_count", 0)),
            done_ticket=int(v.get("done_ticket", 0)),
            lock_owner=v.get("lock_owner"),
            lock_until_ms=int(v.get("lock_until", 0)),
            usage=Usage(
                input_tokens=int(v.get("in_tok", 0)),
                cached_input_tokens=int(v.get("cached_tok", 0)),
                output_tokens=int(v.get("out_tok", 0)),
                reasoning_tokens=int(v.get("reason_tok", 0)),
            ),
            cost_usd=Decimal(str(v.get("cost_usd", 0))),
            ttl_s=int(v.get("ttl_s", 0)),
            expires_at=int(v.get("expires_at", 0)),
            ends_at=int(v.get("ends_at", 0)),
            summary_upto=int(v.get("summary_upto", 0)),
            pending_tokens=int(v.get("pending_tokens", 0)),
        )

    def create(self, head: Head) -> None:
        item = {
            "sid": head.key.pk,
            "sk": HEAD_SK,
            "tenant_id": head.key.tenant_id,
            "agent": head.key.agent,
            "session_id": head.key.session_id,
            "created_ms": head.created_ms,
            "metadata": json.dumps(head.metadata, sort_keys=True),
            "version": 1,
            "turns": 0,
            "msg_count": 0,
            "done_ticket": 0,
            "in_tok": 0,
            "cached_tok": 0,
            "out_tok": 0,
            "reason_tok": 0,
            "cost_usd": Decimal(0),
            "ttl_s": head.ttl_s,
            "expires_at": head.expires_at,
            "ends_at": head.ends_at,
            "summary_upto": 0,
            "pending_tokens": 0,
        }
        self.client.put_item(
            TableName=self.table_name,
            Item=self._item(item),
            ConditionExpression="attribute_not_exists(sid)",
        )

    def head(self, key: SessionKey) -> Head | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key(key, HEAD_SK), ConsistentRead=True
        ).get("Item")
        return self._head(item, key) if item else None

    # -- tickets and the lock

    def take_ticket(
        self, key: SessionKey, message: str, request_id: str, now_s: float, ends_at: int
    ) -> int:
        """Store ``message`` as the next ticket's queue entry; counter and entry in one write."""
        for attempt in range(400):
            counter = self.client.get_item(
                TableName=self.table_name, Key=self._key(key, COUNTER_SK), ConsistentRead=True
            ).get("Item")
            last = int(self._plain(counter)["n"]) if counter else 0
            ticket = last + 1
            if counter:
                update_condition = "n = :last"
                values = {":t": ticket, ":last": last, ":end": ends_at}
            else:
                update_condition = "attribute_not_exists(sid)"
                values = {":t": ticket, ":end": ends_at}
            entry = {
                "sid": key.pk,
                "sk": queue_sk(ticket),
                "ticket": ticket,
                "status": "queued",
                "message": message,
                "request_id": request_id,
                "created_ms": int(now_s * 1000),
                "expires_at": ends_at,
            }
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        {
                            "ConditionCheck": {
                                "TableName": self.table_name,
                                "Key": self._key(key, HEAD_SK),
                                "ConditionExpression": (
                                    "attribute_exists(sid) AND expires_at > :now"
                                ),
                                "ExpressionAttributeValues": self._av({":now": int(now_s)}),
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table_name,
                                "Key": self._key(key, COUNTER_SK),
                                "UpdateExpression": "SET n = :t, expires_at = :end",
                                "ConditionExpression": update_condition,
                                "ExpressionAttributeValues": self._av(values),
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table_name,
                                "Item": self._item(entry),
                                "ConditionExpression": "attribute_not_exists(sid)",
                            }
                        },
                    ]
                )
                return ticket
            except Exception as exc:
                if self._code(exc) != "TransactionCanceledException":
                    raise
                reasons = self._reasons(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise SessionGone from exc
                # Another message took this number first (or a transaction conflict): retry.
                self._sleep(random.uniform(0, min(0.05, 0.002 * 2 ** min(attempt, 5))))  # noqa: S311
        raise SessionBusy("too many messages are arriving at once; retry shortly")

    def acquire_lock(self, key: SessionKey, owner: str, now_s: float, lease_s: int) -> Head:
        now_ms = int(now_s * 1000)
        try:
            reply = self.client.update_item(
                TableName=self.table_name,
                Key=self._key(key, HEAD_SK),
                UpdateExpression="SET lock_owner = :o, lock_until = :u, version = version + :one",
                ConditionExpression=(
                    "attribute_exists(sid) AND expires_at > :now AND "
                    "(attribute_not_exists(lock_owner) OR lock_until < :now_ms)"
                ),
                ExpressionAttributeValues=self._av(
                    {
                        ":o": owner,
                        ":u": now_ms + lease_s * 1000,
                        ":one": 1,
                        ":now": int(now_s),
                        ":now_ms": now_ms,
                    }
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if self._code(exc) != "ConditionalCheckFailedException":
                raise
            item = getattr(exc, "response", {}).get("Item")
            if not item:
                raise SessionGone from exc
            head = self._head(item, key)
            if head.expired(now_s):
                raise SessionGone from exc
            raise LockBusy(head) from exc
        return self._head(reply["Attributes"], key)

    def release_lock(self, key: SessionKey, owner: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(key, HEAD_SK),
                UpdateExpression="REMOVE lock_owner, lock_until SET version = version + :one",
                ConditionExpression="lock_owner = :o",
                ExpressionAttributeValues=self._av({":o": owner, ":one": 1}),
            )
        except Exception as exc:
            if self._code(exc) != "ConditionalCheckFailedException":
                raise

    # -- queue entries

    def entry(self, key: SessionKey, ticket: int) -> QueueEntry | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key(key, queue_sk(ticket)), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        v = self._plain(item)
        return QueueEntry(
            ticket=int(v["ticket"]),
            status=v["status"],
            message=v.get("message"),
            request_id=str(v.get("request_id", "")),
            result=json.loads(v["result"]) if v.get("result") else None,
            error=json.loads(v["error"]) if v.get("error") else None,
        )

    def _set_status(
        self, key: SessionKey, ticket: int, status: str, allowed: Sequence[str]
    ) -> bool:
        names = {f":a{i}": s for i, s in enumerate(allowed)}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(key, queue_sk(ticket)),
                UpdateExpression="SET #s = :s",
                ConditionExpression=f"#s IN ({', '.join(names)})",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=self._av({":s": status, **names}),
            )
        except Exception as exc:
            if self._code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def claim_entry(self, key: SessionKey, ticket: int) -> bool:
        # "running" too: a turn whose Lambda died is taken over (its commit can no longer apply).
        return self._set_status(key, ticket, "running", ("queued", "running"))

    def cancel_entry(self, key: SessionKey, ticket: int) -> bool:
        return self._set_status(key, ticket, "cancelled", ("queued",))

    # -- messages and summary

    def _message(self, item: dict[str, Any]) -> StoredMessage:
        v = self._plain(item)
        return StoredMessage(
            index=int(v["index"]),
            role=v["role"],
            content=str(v.get("content", "")),
            turn=int(v["turn"]),
            created_ms=int(v["created_ms"]),
            tokens=int(v["tokens"]),
            truncated=bool(v.get("truncated", False)),
        )

    def messages(
        self, key: SessionKey, *, after: int, limit: int, newest_first: bool
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages with index > ``after`` (one Query page), oldest first."""
        reply = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="sid = :p AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues=self._av(
                {":p": key.pk, ":lo": msg_sk(after + 1), ":hi": _MSG + _LAST}
            ),
            ScanIndexForward=not newest_first,
            Limit=limit,
            ConsistentRead=True,
        )
        found = [self._message(item) for item in reply.get("Items", [])]
        return sorted(found, key=lambda m: m.index)

    def summary(self, key: SessionKey) -> str | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key(key, SUMMARY_SK), ConsistentRead=True
        ).get("Item")
        return str(self._plain(item)["text"]) if item else None

    def save_summary(
        self, head: Head, owner: str, text: str, upto: int, folded_tokens: int
    ) -> Head:
        pending = max(0, head.pending_tokens - folded_tokens)
        summary = {
            "sid": head.key.pk,
            "sk": SUMMARY_SK,
            "text": text[:MAX_STORED_CHARS],
            "upto": upto,
            "expires_at": head.ends_at,
        }
        self._transact(
            [
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": self._key(head.key, HEAD_SK),
                        "UpdateExpression": (
                            "SET summary_upto = :u, pending_tokens = :p, version = :v1"
                        ),
                        "ConditionExpression": "version = :v AND lock_owner = :o",
                        "ExpressionAttributeValues": self._av(
                            {
                                ":u": upto,
                                ":p": pending,
                                ":v": head.version,
                                ":v1": head.version + 1,
                                ":o": owner,
                            }
                        ),
                    }
                },
                {"Put": {"TableName": self.table_name, "Item": self._item(summary)}},
            ],
            head_at=0,
        )
        return replace(head, version=head.version + 1, summary_upto=upto, pending_tokens=pending)

    def commit_turn(self, head: Head, owner: str, commit: TurnCommit) -> Head:
        sets = [
            "turns = :turns",
            "msg_count = :mc",
            "version = :v1",
            "in_tok = :in",
            "cached_tok = :cached",
            "out_tok = :out",
            "reason_tok = :reason",
            "cost_usd = :cost",
            "pending_tokens = :pending",
            "expires_at = :exp",
        ]
        msg_count = head.msg_count + len(commit.messages)
        values: dict[str, Any] = {
            ":turns": commit.turns,
            ":mc": msg_count,
            ":v": head.version,
            ":v1": head.version + 1,
            ":o": owner,
            ":in": commit.usage.input_tokens,
            ":cached": commit.usage.cached_input_tokens,
            ":out": commit.usage.output_tokens,
            ":reason": commit.usage.reasoning_tokens,
            ":cost": commit.cost_usd,
            ":pending": commit.pending_tokens,
            ":exp": commit.expires_at,
        }
        if commit.ticket is not None:
            sets.append("done_ticket = :dt")
            values[":dt"] = commit.ticket
        if commit.release:
            expression = "SET " + ", ".join(sets) + " REMOVE lock_owner, lock_until"
        else:
            sets.append("lock_until = :lu")
            values[":lu"] = commit.lock_until_ms
            expression = "SET " + ", ".join(sets)
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": self._key(head.key, HEAD_SK),
                    "UpdateExpression": expression,
                    "ConditionExpression": "version = :v AND lock_owner = :o",
                    "ExpressionAttributeValues": self._av(values),
                }
            }
        ]
        for message in commit.messages:
            item = message.item(head.key.pk, head.ends_at)
            items.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": self._item(item),
                        "ConditionExpression": "attribute_not_exists(sid)",
                    }
                }
            )
        if commit.ticket is not None:
            items.append(self._entry_update(head.key, commit.ticket, "done", commit.result))
        self._transact(items, head_at=0)
        return replace(
            head,
            version=head.version + 1,
            turns=commit.turns,
            msg_count=msg_count,
            usage=commit.usage,
            cost_usd=commit.cost_usd,
            pending_tokens=commit.pending_tokens,
            expires_at=commit.expires_at,
            done_ticket=commit.ticket if commit.ticket is not None else head.done_ticket,
            lock_owner=None if commit.release else head.lock_owner,
            lock_until_ms=0 if commit.release else commit.lock_until_ms,
        )

    def _entry_update(
        self, key: SessionKey, ticket: int, status: str, payload: dict[str, Any] | None
    ) -> dict[str, Any]:
        field_name = "result" if status == "done" else "error"
        values: dict[str, Any] = {":s": status}
        names = {"#s": "status"}
        expression = "SET #s = :s"
        if payload is not None:
            expression += ", #p = :payload"
            names["#p"] = field_name
            values[":payload"] = json.dumps(payload)
        if status == "done":
            expression += " REMOVE message"  # it is stored as a message item now
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": self._key(key, queue_sk(ticket)),
                "UpdateExpression": expression,
                "ConditionExpression": "attribute_exists(sid)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": self._av(values),
            }
        }

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
        values = {":dt": ticket, ":v": head.version, ":v1": head.version + 1, ":o": owner}
        expression = "SET done_ticket = :dt, version = :v1"
        if release:
            expression += " REMOVE lock_owner, lock_until"
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": self._key(head.key, HEAD_SK),
                    "UpdateExpression": expression,
                    "ConditionExpression": "version = :v AND lock_owner = :o",
                    "ExpressionAttributeValues": self._av(values),
                }
            }
        ]
        if error is not None:
            items.append(self._entry_update(head.key, ticket, "failed", error))
        self._transact(items, head_at=0)
        return replace(
            head,
            version=head.version + 1,
            done_ticket=ticket,
            lock_owner=None if release else head.lock_owner,
            lock_until_ms=0 if release else head.lock_until_ms,
        )

    def delete(self, key: SessionKey) -> None:
        """Delete the head (the session is gone at once), then every other item."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=self._key(key, HEAD_SK),
                ConditionExpression="attribute_exists(sid)",
            )
        except Exception as exc:
            if self._code(exc) == "ConditionalCheckFailedException":
                raise SessionGone from exc
            raise
        for batch in self._all_keys(key):
            requests = [{"DeleteRequest": {"Key": k}} for k in batch]
            for attempt in range(10):
                reply = self.client.batch_write_item(RequestItems={self.table_name: requests})
                requests = reply.get("UnprocessedItems", {}).get(self.table_name, [])
                if not requests:
                    break
                self._sleep(min(1.0, 0.05 * 2**attempt))

    def _all_keys(self, key: SessionKey) -> Iterator[list[dict[str, Any]]]:
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "sid = :p",
                "ExpressionAttributeValues": self._av({":p": key.pk}),
                "ProjectionExpression": "sid, sk",
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            reply = self.client.query(**kwargs)
            items = reply.get("Items", [])
            for i in range(0, len(items), 25):
                yield items[i : i + 25]
            start = reply.get("LastEvaluatedKey")
            if not start:
                return


# --------------------------------------------------------------------------- context


def build_history(
    *,
    summary: str | None,
    recent: Sequence[StoredMessage],
    budget_tokens: int,
    fixed_tokens: int,
) -> tuple[list[dict[str, Any]], int]:
    """The summary and the newest whole turns that fit the budget, as chat messages.

    ``fixed_tokens`` is what the system prompt and the new message take. Turns
    are kept whole (a user message with its reply), newest first, until the next
    one would not fit. Returns the messages and their estimated tokens.
    """
    messages: list[dict[str, Any]] = []
    used = fixed_tokens
    if summary:
        content = f"Summary of the earlier conversation:\n{summary}"
        messages.append({"role": "system", "content": content})
        used += estimate_tokens(content)
    turns: dict[int, list[StoredMessage]] = {}
    for message in recent:
        turns.setdefault(message.turn, []).append(message)
    chosen: list[StoredMessage] = []
    for turn in sorted(turns, reverse=True):
        cost = sum(m.tokens for m in turns[turn])
        if used + cost > budget_tokens:
            break
        used += cost
        chosen[:0] = sorted(turns[turn], key=lambda m: m.index)
    messages.extend({"role": m.role, "content": m.content} for m in chosen)
    return messages, used - fixed_tokens


# --------------------------------------------------------------------------- service


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


SUMMARIZER_DIR = Path(__file__).with_name("data") / "summarizer"


def summarizer_spec(policy: SessionPolicy) -> AgentSpec:
    """The internal cheap-tier agent that folds older turns into the rolling summary."""
    return AgentSpec(
        name="session_summarizer",
        version="1.0.0",
        description="Folds older session turns into a short rolling summary.",
        tier="fast",
        prompt_version="v1",
        prompt_dir=SUMMARIZER_DIR,
        limits=Limits(
            max_output_tokens=policy.summary_max_tokens, max_iterations=1, max_input_chars=200_000
        ),
    )


def _error_class(code: str) -> type[StratusError]:
    stack: list[type[StratusError]] = [StratusError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls
        stack.extend(cls.__subclasses__())
    return StratusError


def _raise_stored(error: dict[str, Any]) -> None:
    cls = _error_class(str(error.get("code", "")))
    raise cls(str(error.get("message", "the turn failed")), details=error.get("details") or None)


@dataclass(frozen=True)
class TurnOutcome:
    head: Head
    response: dict[str, Any]


class SessionService:
    """Sessions of one agent: create, read, delete, and post a message (one turn)."""

    def __init__(
        self,
        spec: AgentSpec,
        settings: Settings,
        store: SessionStore,
        runner: TurnRunner,
        summarizer: TurnRunner,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if spec.sessions is None:
            raise ConfigurationError(f"agent {spec.name} has no sessions")
        self.spec = spec
        self.policy: SessionPolicy = spec.sessions
        self._settings = settings
        self._store = store
        self._runner = runner
        self._summarizer = summarizer
        self._clock = clock
        self._sleep = sleep
        self._system_tokens = estimate_tokens(spec.system_prompt)

    # -- create / read / delete

    def _context(self, key: SessionKey, request_id: str, step: str) -> ToolContext:
        """A turn's model calls are billed, budgeted and replayed as (session, step)."""
        scope = CallScope(
            tenant_id=key.tenant_id,
            agent=self.spec.name,
            kind="session",
            scope_id=key.session_id,
            step=step,
        )
        return ToolContext(
            tenant_id=key.tenant_id,
            agent=self.spec.name,
            request_id=request_id,
            settings=self._settings,
            scope=scope,
        )

    def key(self, tenant_id: str, session_id: str) -> SessionKey:
        return SessionKey(tenant_id, self.spec.name, session_id)

    def create(self, tenant_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(metadata, sort_keys=True).encode())
        if size > MAX_METADATA_BYTES:
            raise PayloadTooLarge(
                f"metadata is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES}",
                details={"field": "metadata", "limit": MAX_METADATA_BYTES},
            )
        now = self._clock()
        ends_at = int(now) + self.policy.max_age_s
        head = Head(
            key=self.key(tenant_id, "s_" + uuid.uuid4().hex),
            created_ms=int(now * 1000),
            metadata=metadata,
            ttl_s=self.policy.ttl_s,
            expires_at=min(int(now) + self.policy.ttl_s, ends_at),
            ends_at=ends_at,
        )
        self._store.create(head)
        return {"session_id": head.key.session_id, "expires_at": iso(head.expires_at)}

    def _live_head(self, key: SessionKey) -> Head:
        head = self._store.head(key)
        if head is None or head.expired(self._clock()):
            raise SessionNotFound(
                f"no session {key.session_id!r}", details={"session_id": key.session_id}
            )
        return head

    def get(
        self, tenant_id: str, session_id: str, *, limit: int = 50, after: int = 0
    ) -> dict[str, Any]:
        head = self._live_head(self.key(tenant_id, session_id))
        page = self._store.messages(head.key, after=after, limit=limit, newest_first=False)
        last = page[-1].index if page else after
        return {
            "session_id": session_id,
            "agent": self.spec.name,
            "created_at": iso(head.created_ms / 1000),
            "expires_at": iso(head.expires_at),
            "metadata": head.metadata,
            "turns": head.turns,
            "message_count": head.msg_count,
            "usage": head.usage.model_dump(),
            "cost_usd": float(head.cost_usd),
            "summarized_through": head.summary_upto,
            "messages": [
                {
                    "index": m.index,
                    "role": m.role,
                    "content": m.content,
                    "turn": m.turn,
                    "created_at": iso(m.created_ms / 1000),
                    **({"truncated": True} if m.truncated else {}),
                }
                for m in page
            ],
            "next_cursor": str(last) if last < head.msg_count else None,
        }

    def delete(self, tenant_id: str, session_id: str) -> None:
        key = self.key(tenant_id, session_id)
        self._live_head(key)
        try:
            self._store.delete(key)
        except SessionGone as exc:
            raise SessionNotFound(f"no session {session_id!r}") from exc

    # -- one message, one turn

    def post_message(
        self,
        tenant_id: str,
        session_id: str,
        message: str,
        *,
        request_id: str,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        limit = self.policy.max_message_chars
        if len(message) > limit:
            raise MessageTooLarge(
                f"the message is {len(message)} characters; agent {self.spec.name} "
                f"accepts at most {limit} per session message",
                details={"limit": limit, "size": len(message)},
            )
        key = self.key(tenant_id, session_id)
        head = self._live_head(key)
        deadline = deadline or NoDeadline()
        try:
            if self.policy.policy == "reject":
                return self._reject(key, message, request_id, deadline)
            return self._enqueue(key, head, message, request_id, deadline)
        except SessionGone as exc:
            raise SessionNotFound(f"no session {session_id!r}") from exc
        except LostLock as exc:
            # Deleted meanwhile, or (never within a function's timeout) our lease ran out.
            self._live_head(key)
            raise SessionBusy(
                "another turn took over this session; the message was not applied",
                details={"policy": self.policy.policy},
            ) from exc

    def _lease(self) -> int:
        return self.spec.session_lock_lease_s

    def _reject(
        self, key: SessionKey, message: str, request_id: str, deadline: Deadline
    ) -> dict[str, Any]:
        owner = uuid.uuid4().hex
        try:
            head = self._store.acquire_lock(key, owner, self._clock(), self._lease())
        except LockBusy as exc:
            raise SessionBusy(
                "a turn is running in this session; send the message when it has finished",
                details={"policy": "reject"},
            ) from exc
        try:
            return self._turn(head, owner, message, request_id, deadline, None, True).response
        except BaseException:
            self._store.release_lock(key, owner)
            raise

    def _enqueue(
        self, key: SessionKey, head: Head, message: str, request_id: str, deadline: Deadline
    ) -> dict[str, Any]:
        ticket = self._store.take_ticket(key, message, request_id, self._clock(), head.ends_at)
        give_up_at = self._clock() + self.policy.enqueue_wait_s
        owner = uuid.uuid4().hex
        delay = 0.01
        while True:
            try:
                held = self._store.acquire_lock(key, owner, self._clock(), self._lease())
            except LockBusy as busy:
                if busy.head.done_ticket >= ticket:
                    return self._outcome(key, ticket)
                if self._clock() >= give_up_at or not self._time_for_turn(deadline):
                    return self._give_up(key, ticket, deadline)
                self._sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter
                delay = min(delay * 1.5, 0.25)
                continue
            return self._drain(held, owner, ticket, message, request_id, deadline)

    def _time_for_turn(self, deadline: Deadline) -> bool:
        return deadline.remaining_s() - self._settings.deadline_margin_s >= MIN_TURN_S

    def _drain(
        self,
        head: Head,
        owner: str,
        ticket: int,
        message: str,
        request_id: str,
        deadline: Deadline,
    ) -> dict[str, Any]:
        """Holding the lock: run every ticket up to ours, in order, then release."""
        key = head.key
        try:
            while head.done_ticket < ticket:
                current = head.done_ticket + 1
                mine = current == ticket
                text, rid = message, request_id
                if not mine:
                    entry = self._store.entry(key, current)
                    if entry is None or entry.status not in ("queued", "running"):
                        head = self._store.finish_entry(
                            head, owner, current, error=None, release=False
                        )
                        continue
                    if not self._time_for_turn(deadline):
                        break
                    if not self._store.claim_entry(key, current):
                        continue  # withdrawn just now: skipped on the next pass
                    text, rid = entry.message or "", entry.request_id
                try:
                    outcome = self._turn(head, owner, text, rid, deadline, current, mine)
                except LostLock:
                    # Another instance owns the session now (or it was deleted); our own
                    # message is withdrawn if still queued, else its result is awaited.
                    return self._give_up(key, ticket, deadline)
                except SessionGone:
                    raise
                except StratusError as err:
                    logger.warning(
                        "session turn failed",
                        extra={"code": err.code, "ticket": current, "session": key.session_id},
                    )
                    error = {"code": err.code, "message": err.message, "details": err.details}
                    head = self._store.finish_entry(head, owner, current, error=error, release=mine)
                    if mine:
                        raise
                    continue
                head = outcome.head
                if mine:
                    return outcome.response
        except BaseException:
            self._store.release_lock(key, owner)
            raise
        self._store.release_lock(key, owner)
        if head.done_ticket >= ticket:
            return self._outcome(key, ticket)
        return self._give_up(key, ticket, deadline)

    def _outcome(self, key: SessionKey, ticket: int) -> dict[str, Any]:
        entry = self._store.entry(key, ticket)
        if entry is None:
            raise SessionGone
        if entry.status == "done" and entry.result is not None:
            return entry.result
        if entry.status == "failed" and entry.error is not None:
            _raise_stored(entry.error)
        raise SessionBusy("the message was withdrawn before its turn", details={"queued": False})

    def _give_up(self, key: SessionKey, ticket: int, deadline: Deadline) -> dict[str, Any]:
        """Out of waiting time: withdraw the message, or wait for the turn already running it."""
        if self._store.cancel_entry(key, ticket):
            raise SessionBusy(
                "the session stayed busy for longer than this agent waits; the message was "
                "not processed, send it again",
                details={"policy": "enqueue", "queued": False, "ticket": ticket},
            )
        # Another instance is running this very message: its result arrives shortly.
        delay = 0.05
        while deadline.remaining_s() - self._settings.deadline_margin_s > delay:
            entry = self._store.entry(key, ticket)
            if entry is None:
                raise SessionGone
            if entry.status in ("done", "failed", "cancelled"):
                return self._outcome(key, ticket)
            self._sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise SessionBusy(
            "the message is being processed by another request; its reply will be in the "
            "session history",
            details={"policy": "enqueue", "queued": True, "ticket": ticket},
        )

    def _should_summarize(self, head: Head) -> bool:
        unsummarized = head.msg_count - head.summary_upto
        return (
            head.pending_tokens > self.policy.summarize_after_tokens
            or unsummarized > self.policy.max_recent_messages
        )

    def _turn(
        self,
        head: Head,
        owner: str,
        message: str,
        request_id: str,
        deadline: Deadline,
        ticket: int | None,
        release: bool,
    ) -> TurnOutcome:
        key = head.key
        turn = head.turns + 1
        usage, cost = Usage(), Decimal(0)
        summary = self._store.summary(key) if head.summary_upto else None
        recent = self._store.messages(
            key, after=head.summary_upto, limit=self.policy.max_recent_messages, newest_first=True
        )
        if self._should_summarize(head):
            head, summary, recent, s_usage, s_cost = self._summarize(
                head, owner, summary, recent, turn, request_id, deadline
            )
            usage, cost = usage + s_usage, cost + s_cost
        fixed = self._system_tokens + estimate_tokens(message)
        history, _ = build_history(
            summary=summary,
            recent=recent,
            budget_tokens=self.policy.context_token_budget,
            fixed_tokens=fixed,
        )
        ctx = self._context(key, request_id, f"turn-{turn}")
        result = self._runner.run(message, ctx=ctx, deadline=deadline, history=history)
        reply = result.output if isinstance(result.output, str) else json.dumps(result.output)
        usage, cost = usage + result.usage, cost + result.cost_usd
        now = self._clock()
        now_ms = int(now * 1000)
        stored_reply = reply[:MAX_STORED_CHARS]
        user = StoredMessage(
            head.msg_count + 1, "user", message, turn, now_ms, estimate_tokens(message)
        )
        assistant = StoredMessage(
            head.msg_count + 2,
            "assistant",
            stored_reply,
            turn,
            now_ms,
            estimate_tokens(stored_reply),
            truncated=len(reply) > MAX_STORED_CHARS,
        )
        total_cost = head.cost_usd + cost
        response = {
            "reply": reply,
            "turn": turn,
            "usage": usage.model_dump(),
            "cost_usd": float(cost),
            "session_cost_usd": float(total_cost),
            "request_id": request_id,
        }
        commit = TurnCommit(
            messages=(user, assistant),
            turns=turn,
            usage=head.usage + usage,
            cost_usd=total_cost,
            pending_tokens=head.pending_tokens + user.tokens + assistant.tokens,
            expires_at=min(int(now) + self.policy.ttl_s, head.ends_at),
            lock_until_ms=now_ms + self._lease() * 1000,
            release=release,
            ticket=ticket,
            result={**response, "reply": stored_reply} if ticket is not None else None,
        )
        head = self._store.commit_turn(head, owner, commit)
        logger.info(
            "session turn",
            extra={
                "tenant_id": key.tenant_id,
                "agent": self.spec.name,
                "session": key.session_id,
                "turn": turn,
                "history_messages": len(history),
                "usage": usage.model_dump(),
                "cost_usd": str(cost),
            },
        )
        return TurnOutcome(head=head, response=response)

    def _summarize(
        self,
        head: Head,
        owner: str,
        summary: str | None,
        recent: list[StoredMessage],
        turn: int,
        request_id: str,
        deadline: Deadline,
    ) -> tuple[Head, str | None, list[StoredMessage], Usage, Decimal]:
        """Fold the older unsummarised turns into the summary; keep half the budget verbatim."""
        keep_budget = self.policy.context_token_budget // 2
        kept = 0
        keep_from = head.msg_count + 1
        by_turn: dict[int, list[StoredMessage]] = {}
        for message in recent:
            by_turn.setdefault(message.turn, []).append(message)
        for number in sorted(by_turn, reverse=True):
            cost = sum(m.tokens for m in by_turn[number])
            if kept + cost > keep_budget or head.msg_count + 1 - keep_from >= (
                self.policy.max_recent_messages // 2
            ):
                break
            kept += cost
            keep_from = min(m.index for m in by_turn[number])
        fold = [
            m
            for m in self._store.messages(
                head.key,
                after=head.summary_upto,
                limit=self.policy.max_recent_messages,
                newest_first=False,
            )
            if m.index < keep_from
        ]
        if not fold:
            return head, summary, recent, Usage(), Decimal(0)
        lines = [f"Summary so far:\n{summary}" if summary else "Summary so far: (none)", ""]
        lines.append("Turns to fold into the summary:")
        for m in fold:
            lines.append(f"{m.role}: {m.content[:SUMMARY_INPUT_MESSAGE_CHARS]}")
        key = head.key
        ctx = self._context(key, request_id, f"turn-{turn}-summary")
        result = self._summarizer.run("\n".join(lines), ctx=ctx, deadline=deadline)
        text = result.output if isinstance(result.output, str) else json.dumps(result.output)
        upto = fold[-1].index
        head = self._store.save_summary(
            head, owner, text, upto=upto, folded_tokens=sum(m.tokens for m in fold)
        )
        logger.info(
            "session summarised",
            extra={"session": key.session_id, "through": upto, "folded": len(fold)},
        )
        return (
            head,
            text[:MAX_STORED_CHARS],
            [m for m in recent if m.index > upto],
            result.usage,
            result.cost_usd,
        )


def build_service(spec: AgentSpec, settings: Settings, model: Any = None) -> SessionService:
    """The service of one agent, on the DynamoDB store and the agent's model client."""
    from stratus.llm import ModelClient
    from stratus.prices import load_price_table
    from stratus.runner import AgentRunner

    if spec.sessions is None:
        raise ConfigurationError(f"agent {spec.name} has no sessions")
    client = model or ModelClient(settings)
    prices = load_price_table(settings.price_table)
    return SessionService(
        spec,
        settings,
        DynamoSessionStore(settings.sessions_table),
        AgentRunner(spec, client, prices, settings),
        AgentRunner(summarizer_spec(spec.sessions), client, prices, settings),
    )


class IdempotentMessages:
    """``post_message`` under an ``Idempotency-Key``, scoped by (tenant, agent, session).

    A repeat with the same key returns the stored reply without a new turn; the same
    key with another message is ``idempotency_key_reused``; a failed turn (or a 409)
    leaves no record, so the retry runs. Built lazily, once per warm function.
    """

    def __init__(self, service: SessionService, settings: Settings) -> None:
        from stratus.idempotency import IdempotentOperation

        self._service = service
        self._operation = IdempotentOperation(
            f"session_message.{service.spec.name}",
            settings,
            self._post,
            scope_fields=("tenant", "agent", "session"),
        )

    def post(
        self,
        tenant_id: str,
        session_id: str,
        message: str,
        *,
        key: str,
        request_id: str,
        lambda_context: Any = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        # Size and existence first: a 413/404 must not depend on the key's history.
        if len(message) > self._service.policy.max_message_chars:
            self._service.post_message(tenant_id, session_id, message, request_id=request_id)
        return self._operation(
            key=key,
            scope={"tenant": tenant_id, "agent": self._service.spec.name, "session": session_id},
            body={"message": message},
            request_id=request_id,
            lambda_context=lambda_context,
            deadline=deadline,
        )

    def _post(self, data: dict[str, Any], deadline: Deadline | None) -> dict[str, Any]:
        return self._service.post_message(
            data["tenant"],
            data["session"],
            data["body"]["message"],
            request_id=data["request_id"],
            deadline=deadline,
        )

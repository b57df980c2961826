""":class:`DynamoSessionStore`: the session store on one DynamoDB table.

One partition per session (``sid = <tenant>#<agent>#<session id>``): the head
``H``, one item per message ``M#<index>``, the summary ``S``, the ticket counter
``N`` and the queued messages ``Q#<ticket>``. Every write that needs the lock is
conditional on the head's ``version`` and ``lock_owner``; a turn commits its two
messages, the head and its queue entry in one ``TransactWriteItems``. All access
goes through :class:`stratus.ddb.Table`.

A turn's round trips on this table (besides its model calls): (1)
:meth:`~DynamoSessionStore.read_turn`, a consistent ``BatchGetItem`` of the head,
the counter and the summary issued together with the Query of the newest
``max_recent_messages`` messages; (2) the lock: ``enqueue`` takes the next
ticket and the lock in one transaction
(:meth:`~DynamoSessionStore.take_ticket_and_lock`, conditional on the counter and
the head's version as read in 1), ``reject`` one conditional ``UpdateItem``; (3)
the commit, which also releases. Whatever the session's length: at most
``max_recent_messages`` messages are read. The read in (1) happens before the
lock; the service uses it only if it holds exactly what a read under the locked
head would return (``TurnView.window``), else it reads again. When the session
is busy (or changed since the read) an ``enqueue`` message takes its ticket
alone, then waits for the lock as before. A turn that summarises costs the
summary's write, and a read of the oldest unsummarised messages when they are
more than the window holds.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from stratus import ddb, fanout
from stratus.errors import SessionBusy
from stratus.sessions.model import (
    COUNTER_SK,
    HEAD_SK,
    MAX_STORED_CHARS,
    MSG_PREFIX,
    SUMMARY_SK,
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
    msg_sk,
    queue_sk,
)
from stratus.usage import Usage

_LAST = "9999999999"
#: Conditions of a write that needs the lock: the version it read, and the owner.
_HELD = "version = :v AND lock_owner = :o"


def _key(key: SessionKey, sk: str) -> dict[str, str]:
    return {"sid": key.pk, "sk": sk}


def _head(v: dict[str, Any], key: SessionKey | None = None) -> Head:
    return Head(
        key=key or SessionKey.from_pk(str(v["sid"])),
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


def _message(v: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        index=int(v["index"]),
        role=v["role"],
        content=str(v.get("content", "")),
        turn=int(v["turn"]),
        created_ms=int(v["created_ms"]),
        tokens=int(v["tokens"]),
        truncated=bool(v.get("truncated", False)),
        release=v.get("release"),
    )


class DynamoSessionStore:
    """:class:`~stratus.sessions.store.SessionStore` on one DynamoDB table."""

    def __init__(self, table: ddb.Table, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.table = table
        self._sleep = sleep

    def _transact(self, items: list[dict[str, Any]], *, head_at: int) -> None:
        """One transaction; a failed head condition is ``LostLock``; conflicts are retried."""
        for attempt in range(8):
            try:
                self.table.transact(items)
                return
            except ddb.TransactionCancelled as exc:
                if exc.condition_failed_at(head_at):
                    raise LostLock from exc
                if exc.any_condition_failed or attempt == 7:
                    raise
                self._sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    # -- head

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
        try:
            self.table.put(item, condition="attribute_not_exists(sid)")
        except ddb.ConditionFailed as exc:
            raise SessionExists(head.key.session_id) from exc

    def head(self, key: SessionKey) -> Head | None:
        item = self.table.get(_key(key, HEAD_SK))
        return _head(item, key) if item else None

    def read_turn(self, key: SessionKey, *, limit: int) -> TurnView:
        """One round trip: a consistent ``BatchGetItem`` of the head, the counter and the
        summary, and the Query of the newest ``limit`` messages, issued together."""
        small, newest = fanout.values(
            fanout.run_all(
                [
                    lambda: self.table.batch_get(
                        [_key(key, sk) for sk in (HEAD_SK, COUNTER_SK, SUMMARY_SK)],
                        consistent=True,
                    ),
                    lambda: self.messages(key, after=0, limit=limit, newest_first=True),
                ]
            )
        )
        by_sk = {str(item["sk"]): item for item in small}
        head, counter, summary = (by_sk.get(sk) for sk in (HEAD_SK, COUNTER_SK, SUMMARY_SK))
        return TurnView(
            head=_head(head, key) if head else None,
            last_ticket=int(counter["n"]) if counter else 0,
            summary=str(summary["text"]) if summary else None,
            summary_upto=int(summary.get("upto", 0)) if summary else 0,
            messages=tuple(newest),
        )

    # -- tickets and the lock

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
        """Store ``message`` as the next ticket's queue entry; counter and entry in one write.

        With ``last`` (the counter as the caller read it) the first attempt writes at
        once; a stale ``last`` fails the counter's condition and the next attempt reads.
        """
        for attempt in range(400):
            if last is None:
                counter = self.table.get(_key(key, COUNTER_SK))
                last = int(counter["n"]) if counter else 0
            ticket = last + 1
            try:
                self.table.transact(
                    [
                        self.table.check_op(
                            _key(key, HEAD_SK),
                            "attribute_exists(sid) AND expires_at > :now",
                            values={":now": int(now_s)},
                        ),
                        *self._ticket_ops(key, ticket, message, request_id, now_s, ends_at),
                    ]
                )
                return ticket
            except ddb.TransactionCancelled as exc:
                if exc.condition_failed_at(0):
                    raise SessionGone from exc
                stale_hint, last = attempt == 0 and exc.condition_failed_at(1), None
                if stale_hint:
                    continue  # the caller's counter was behind: read it and try again
                # Another message took this number first (or a transaction conflict): retry.
                self._sleep(random.uniform(0, min(0.05, 0.002 * 2 ** min(attempt, 5))))  # noqa: S311
        raise SessionBusy("too many messages are arriving at once; retry shortly")

    def _ticket_ops(
        self,
        key: SessionKey,
        ticket: int,
        message: str,
        request_id: str,
        now_s: float,
        ends_at: int,
    ) -> list[dict[str, Any]]:
        """The counter's move from ``ticket - 1`` to ``ticket`` and the ticket's queue entry."""
        last = ticket - 1
        if last:
            condition = "n = :last"
            values: dict[str, Any] = {":t": ticket, ":last": last, ":end": ends_at}
        else:
            condition = "attribute_not_exists(sid)"
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
        return [
            self.table.update_op(
                _key(key, COUNTER_SK),
                "SET n = :t, expires_at = :end",
                condition=condition,
                values=values,
            ),
            self.table.put_op(entry, condition="attribute_not_exists(sid)"),
        ]

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
        until = now_ms + lease_s * 1000
        lock = self.table.update_op(
            _key(head.key, HEAD_SK),
            "SET lock_owner = :o, lock_until = :u, version = :v1",
            condition=(
                "version = :v AND expires_at > :now AND "
                "(attribute_not_exists(lock_owner) OR lock_until < :now_ms)"
            ),
            values={
                ":o": owner,
                ":u": until,
                ":v": head.version,
                ":v1": head.version + 1,
                ":now": int(now_s),
                ":now_ms": now_ms,
            },
        )
        ticket = last + 1
        ops = self._ticket_ops(head.key, ticket, message, request_id, now_s, head.ends_at)
        try:
            self.table.transact([lock, *ops])
        except ddb.TransactionCancelled:
            return None  # busy, changed, gone, or a conflict: nothing was written
        return ticket, replace(
            head, lock_owner=owner, lock_until_ms=until, version=head.version + 1
        )

    def acquire_lock(self, key: SessionKey, owner: str, now_s: float, lease_s: int) -> Head:
        now_ms = int(now_s * 1000)
        try:
            item = self.table.update(
                _key(key, HEAD_SK),
                "SET lock_owner = :o, lock_until = :u, version = version + :one",
                condition=(
                    "attribute_exists(sid) AND expires_at > :now AND "
                    "(attribute_not_exists(lock_owner) OR lock_until < :now_ms)"
                ),
                values={
                    ":o": owner,
                    ":u": now_ms + lease_s * 1000,
                    ":one": 1,
                    ":now": int(now_s),
                    ":now_ms": now_ms,
                },
                return_old_on_failure=True,
            )
        except ddb.ConditionFailed as exc:
            if not exc.item:
                raise SessionGone from exc
            head = _head(exc.item, key)
            if head.expired(now_s):
                raise SessionGone from exc
            raise LockBusy(head) from exc
        return _head(item, key)

    def release_lock(self, key: SessionKey, owner: str) -> None:
        with contextlib.suppress(ddb.ConditionFailed):  # not (or no longer) ours: nothing to do
            self.table.update(
                _key(key, HEAD_SK),
                "REMOVE lock_owner, lock_until SET version = version + :one",
                condition="lock_owner = :o",
                values={":o": owner, ":one": 1},
                returns="NONE",
            )

    # -- queue entries

    def entry(self, key: SessionKey, ticket: int) -> QueueEntry | None:
        v = self.table.get(_key(key, queue_sk(ticket)))
        if not v:
            return None
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
            self.table.update(
                _key(key, queue_sk(ticket)),
                "SET #s = :s",
                condition=f"#s IN ({', '.join(names)})",
                names={"#s": "status"},
                values={":s": status, **names},
                returns="NONE",
            )
        except ddb.ConditionFailed:
            return False
        return True

    def claim_entry(self, key: SessionKey, ticket: int) -> bool:
        # "running" too: a turn whose Lambda died is taken over (its commit can no longer apply).
        return self._set_status(key, ticket, "running", ("queued", "running"))

    def cancel_entry(self, key: SessionKey, ticket: int) -> bool:
        return self._set_status(key, ticket, "cancelled", ("queued",))

    # -- messages and summary

    def messages(
        self, key: SessionKey, *, after: int, limit: int, newest_first: bool
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages with index > ``after`` (one Query page), oldest first."""
        page = self.table.query(
            "sid = :p AND sk BETWEEN :lo AND :hi",
            values={":p": key.pk, ":lo": msg_sk(after + 1), ":hi": MSG_PREFIX + _LAST},
            forward=not newest_first,
            limit=limit,
        )
        return sorted((_message(item) for item in page.items), key=lambda m: m.index)

    def summary(self, key: SessionKey) -> str | None:
        item = self.table.get(_key(key, SUMMARY_SK))
        return str(item["text"]) if item else None

    def save_summary(
        self, head: Head, owner: str, text: str, upto: int, folded_tokens: int
    ) -> Head:
        after = head.summarized(upto, folded_tokens)
        summary = {
            "sid": head.key.pk,
            "sk": SUMMARY_SK,
            "text": text[:MAX_STORED_CHARS],
            "upto": upto,
            "expires_at": head.ends_at,
        }
        self._transact(
            [
                self.table.update_op(
                    _key(head.key, HEAD_SK),
                    "SET summary_upto = :u, pending_tokens = :p, version = :v1",
                    condition=_HELD,
                    values={
                        ":u": upto,
                        ":p": after.pending_tokens,
                        ":v": head.version,
                        ":v1": head.version + 1,
                        ":o": owner,
                    },
                ),
                self.table.put_op(summary),
            ],
            head_at=0,
        )
        return after

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
        values: dict[str, Any] = {
            ":turns": commit.turns,
            ":mc": head.msg_count + len(commit.messages),
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
        items = [
            self.table.update_op(
                _key(head.key, HEAD_SK), expression, condition=_HELD, values=values
            )
        ]
        for message in commit.messages:
            item = message.item(head.key.pk, head.ends_at)
            items.append(self.table.put_op(item, condition="attribute_not_exists(sid)"))
        if commit.ticket is not None:
            items.append(self._entry_update(head.key, commit.ticket, "done", commit.result))
        self._transact(items, head_at=0)
        return head.committed(commit)

    def _entry_update(
        self, key: SessionKey, ticket: int, status: str, payload: dict[str, Any] | None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {":s": status}
        names = {"#s": "status"}
        expression = "SET #s = :s"
        if payload is not None:
            expression += ", #p = :payload"
            names["#p"] = "result" if status == "done" else "error"
            values[":payload"] = json.dumps(payload)
        if status == "done":
            expression += " REMOVE message"  # it is stored as a message item now
        return self.table.update_op(
            _key(key, queue_sk(ticket)),
            expression,
            condition="attribute_exists(sid)",
            names=names,
            values=values,
        )

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
        expression = "SET done_ticket = :dt, version = :v1"
        if release:
            expression += " REMOVE lock_owner, lock_until"
        values = {":dt": ticket, ":v": head.version, ":v1": head.version + 1, ":o": owner}
        items = [
            self.table.update_op(
                _key(head.key, HEAD_SK), expression, condition=_HELD, values=values
            )
        ]
        if error is not None:
            items.append(self._entry_update(head.key, ticket, "failed", error))
        self._transact(items, head_at=0)
        return head.finished(ticket, release=release)

    def delete(self, key: SessionKey) -> None:
        """Delete the head (the session is gone at once), then every other item."""
        try:
            self.table.delete(_key(key, HEAD_SK), condition="attribute_exists(sid)")
        except ddb.ConditionFailed as exc:
            raise SessionGone from exc
        for batch in self._all_keys(key):
            self.table.batch_delete(batch, sleep=self._sleep)

    def _all_keys(self, key: SessionKey) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for item in self.table.query_all("sid = :p", values={":p": key.pk}, projection="sid, sk"):
            batch.append(item)
            if len(batch) == 25:
                yield batch
                batch = []
        if batch:
            yield batch

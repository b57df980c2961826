"""The session store contract: ``MemorySessionStore`` and ``DynamoSessionStore`` (moto) alike.

Every test runs against both; the service relies on exactly these behaviours.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from stratus import ddb
from stratus.sessions import (
    DynamoSessionStore,
    Head,
    LockBusy,
    LostLock,
    MemorySessionStore,
    SessionExists,
    SessionGone,
    SessionKey,
    SessionStore,
    StoredMessage,
    TurnCommit,
)
from stratus.usage import Usage

NOW = 1_800_000_000.0
LEASE = 30
KEY = SessionKey("tenant-a", "support", "s_1")


@pytest.fixture(params=["memory", "dynamo"])
def store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore()
        return
    request.getfixturevalue("aws_credentials")
    import boto3
    from moto import mock_aws

    from infra.local import moto_atomic
    from tests.tables import create_tables

    with mock_aws():
        moto_atomic.install()
        try:
            client = boto3.client("dynamodb")
            names = create_tables(client)
            yield DynamoSessionStore(ddb.Table(names["sessions"], client), sleep=lambda s: None)
        finally:
            moto_atomic.uninstall()


def new_head(key: SessionKey = KEY, *, expires_at: int = int(NOW) + 3600) -> Head:
    return Head(
        key=key,
        created_ms=int(NOW * 1000),
        metadata={"channel": "chat", "n": 1},
        ttl_s=3600,
        expires_at=expires_at,
        ends_at=int(NOW) + 86_400,
    )


def created(store: SessionStore, key: SessionKey = KEY, **kwargs: Any) -> Head:
    store.create(new_head(key, **kwargs))
    head = store.head(key)
    assert head is not None
    return head


def commit_for(head: Head, texts: tuple[str, str] = ("hi", "hello"), **changes: Any) -> TurnCommit:
    turn = head.turns + 1
    ms = int(NOW * 1000)
    messages = (
        StoredMessage.new(head.msg_count + 1, "user", texts[0], turn, ms),
        StoredMessage.new(head.msg_count + 2, "assistant", texts[1], turn, ms),
    )
    fields: dict[str, Any] = {
        "messages": messages,
        "turns": turn,
        "usage": head.usage + Usage(input_tokens=10, output_tokens=4),
        "cost_usd": head.cost_usd + Decimal("0.25"),
        "pending_tokens": head.pending_tokens + sum(m.tokens for m in messages),
        "expires_at": head.expires_at + 60,
        "lock_until_ms": ms + LEASE * 1000,
        "release": True,
        **changes,
    }
    return TurnCommit(**fields)


# --- head ------------------------------------------------------------------------------


def test_create_and_read_the_head(store: SessionStore) -> None:
    assert store.head(KEY) is None
    head = created(store)
    assert head == replace(new_head(), version=1)
    assert (head.turns, head.msg_count, head.done_ticket, head.lock_owner) == (0, 0, 0, None)
    assert head.usage == Usage() and head.cost_usd == 0
    with pytest.raises(SessionExists):
        store.create(new_head())
    assert store.head(SessionKey("tenant-b", "support", "s_1")) is None


# --- tickets ---------------------------------------------------------------------------


def test_tickets_are_numbered_in_order_with_their_message(store: SessionStore) -> None:
    created(store)
    tickets = [store.take_ticket(KEY, f"m{i}", f"r{i}", NOW, int(NOW) + 99) for i in range(1, 4)]
    assert tickets == [1, 2, 3]
    entry = store.entry(KEY, 2)
    assert entry is not None
    assert (entry.ticket, entry.status, entry.message, entry.request_id) == (
        2,
        "queued",
        "m2",
        "r2",
    )
    assert (entry.result, entry.error) == (None, None)
    assert store.entry(KEY, 4) is None


def test_no_ticket_without_a_live_session(store: SessionStore) -> None:
    with pytest.raises(SessionGone):
        store.take_ticket(KEY, "m", "r", NOW, int(NOW) + 99)
    created(store, expires_at=int(NOW))
    with pytest.raises(SessionGone):
        store.take_ticket(KEY, "m", "r", NOW, int(NOW) + 99)


def test_concurrent_tickets_are_unique_and_gapless(store: SessionStore) -> None:
    created(store)
    barrier = threading.Barrier(8)

    def take(i: int) -> int:
        barrier.wait()
        return store.take_ticket(KEY, f"m{i}", f"r{i}", NOW, int(NOW) + 99)

    with ThreadPoolExecutor(max_workers=8) as pool:
        tickets = list(pool.map(take, range(8)))
    assert sorted(tickets) == list(range(1, 9))
    for i, ticket in enumerate(tickets):
        entry = store.entry(KEY, ticket)
        assert entry is not None and entry.message == f"m{i}"


def test_claim_and_cancel_entries(store: SessionStore) -> None:
    created(store)
    for i in (1, 2, 3):
        store.take_ticket(KEY, f"m{i}", f"r{i}", NOW, int(NOW) + 99)
    assert store.claim_entry(KEY, 1)
    assert store.claim_entry(KEY, 1)  # a dead turn's running entry can be taken over
    assert not store.cancel_entry(KEY, 1)  # running: no longer withdrawable
    assert store.cancel_entry(KEY, 2)
    assert not store.cancel_entry(KEY, 2)
    assert not store.claim_entry(KEY, 2)
    statuses = [getattr(store.entry(KEY, i), "status", None) for i in (1, 2, 3)]
    assert statuses == ["running", "cancelled", "queued"]
    assert not store.claim_entry(KEY, 9) and not store.cancel_entry(KEY, 9)


# --- the lock --------------------------------------------------------------------------


def test_lock_acquire_refuse_and_take_over(store: SessionStore) -> None:
    created(store)
    held = store.acquire_lock(KEY, "a", NOW, LEASE)
    assert (held.lock_owner, held.lock_until_ms, held.version) == ("a", int(NOW * 1000) + 30_000, 2)
    assert store.head(KEY) == held
    with pytest.raises(LockBusy) as busy:
        store.acquire_lock(KEY, "b", NOW + LEASE - 1, LEASE)
    assert busy.value.head.lock_owner == "a"
    assert busy.value.head.version == 2
    # The lease ran out: the next owner takes over and the version moves on.
    taken = store.acquire_lock(KEY, "b", NOW + LEASE + 1, LEASE)
    assert (taken.lock_owner, taken.version) == ("b", 3)
    store.release_lock(KEY, "a")  # not the owner any more: nothing happens
    assert store.head(KEY) == taken
    store.release_lock(KEY, "b")
    freed = store.head(KEY)
    assert freed is not None
    assert (freed.lock_owner, freed.lock_until_ms, freed.version) == (None, 0, 4)
    assert store.acquire_lock(KEY, "c", NOW + LEASE + 2, LEASE).lock_owner == "c"


def test_no_lock_on_a_missing_or_expired_session(store: SessionStore) -> None:
    with pytest.raises(SessionGone):
        store.acquire_lock(KEY, "a", NOW, LEASE)
    created(store, expires_at=int(NOW) + 10)
    with pytest.raises(SessionGone):
        store.acquire_lock(KEY, "a", NOW + 10, LEASE)


# --- writes under the lock -------------------------------------------------------------


def test_commit_turn_stores_messages_head_and_entry_at_once(store: SessionStore) -> None:
    created(store)
    ticket = store.take_ticket(KEY, "hi", "r1", NOW, int(NOW) + 99)
    held = store.acquire_lock(KEY, "a", NOW, LEASE)
    assert store.claim_entry(KEY, ticket)
    commit = commit_for(held, ticket=ticket, result={"reply": "hello", "turn": 1})
    after = store.commit_turn(held, "a", commit)
    assert store.head(KEY) == after
    assert (after.version, after.turns, after.msg_count, after.done_ticket) == (3, 1, 2, 1)
    assert (after.lock_owner, after.lock_until_ms) == (None, 0)
    assert after.usage == Usage(input_tokens=10, output_tokens=4)
    assert after.cost_usd == Decimal("0.25")
    assert after.pending_tokens == commit.pending_tokens
    assert after.expires_at == commit.expires_at
    assert store.messages(KEY, after=0, limit=10, newest_first=False) == list(commit.messages)
    entry = store.entry(KEY, ticket)
    assert entry is not None
    assert (entry.status, entry.message, entry.result) == (
        "done",
        None,
        {"reply": "hello", "turn": 1},
    )


def test_the_assistant_message_keeps_the_release_that_wrote_it(store: SessionStore) -> None:
    created(store)
    held = store.acquire_lock(KEY, "a", NOW, LEASE)
    ms = int(NOW * 1000)
    messages = (
        StoredMessage.new(1, "user", "hi", 1, ms),
        StoredMessage.new(2, "assistant", "hello", 1, ms, release="r-0123456789ab"),
    )
    store.commit_turn(held, "a", commit_for(held, messages=messages))
    user, assistant = store.messages(KEY, after=0, limit=10, newest_first=False)
    assert (user.release, assistant.release) == (None, "r-0123456789ab")
    assert (user, assistant) == messages


def test_commit_turn_can_keep_the_lock(store: SessionStore) -> None:
    held = store.acquire_lock(created(store).key, "a", NOW, LEASE)
    after = store.commit_turn(held, "a", commit_for(held, release=False, lock_until_ms=123_000))
    assert store.head(KEY) == after
    assert (after.lock_owner, after.lock_until_ms) == ("a", 123_000)
    again = store.commit_turn(after, "a", commit_for(after, ("more", "yes")))
    assert (again.turns, again.msg_count, again.lock_owner) == (2, 4, None)


def test_a_stale_or_foreign_write_is_lost_lock_and_writes_nothing(store: SessionStore) -> None:
    created(store)
    stale = store.acquire_lock(KEY, "a", NOW, LEASE)
    current = store.acquire_lock(KEY, "b", NOW + LEASE + 1, LEASE)  # taken over
    for head, owner in ((stale, "a"), (current, "a"), (stale, "b")):
        with pytest.raises(LostLock):
            store.commit_turn(head, owner, commit_for(head))
        with pytest.raises(LostLock):
            store.save_summary(head, owner, "summary", upto=2, folded_tokens=5)
        with pytest.raises(LostLock):
            store.finish_entry(head, owner, 1, error=None, release=True)
    assert store.head(KEY) == current
    assert store.messages(KEY, after=0, limit=10, newest_first=False) == []
    assert store.summary(KEY) is None


def test_finish_entry_marks_failed_or_skipped(store: SessionStore) -> None:
    created(store)
    for i in (1, 2):
        store.take_ticket(KEY, f"m{i}", f"r{i}", NOW, int(NOW) + 99)
    held = store.acquire_lock(KEY, "a", NOW, LEASE)
    error = {"code": "model_unavailable", "message": "down", "details": {}}
    first = store.finish_entry(held, "a", 1, error=error, release=False)
    assert (first.done_ticket, first.version, first.lock_owner) == (1, held.version + 1, "a")
    assert store.head(KEY) == first
    failed = store.entry(KEY, 1)
    assert failed is not None and (failed.status, failed.error) == ("failed", error)
    second = store.finish_entry(first, "a", 2, error=None, release=True)
    assert (second.done_ticket, second.lock_owner) == (2, None)
    assert store.head(KEY) == second
    skipped = store.entry(KEY, 2)
    assert skipped is not None and skipped.status == "queued"  # untouched, just passed


def test_summary_is_saved_with_the_head(store: SessionStore) -> None:
    held = store.acquire_lock(created(store).key, "a", NOW, LEASE)
    held = store.commit_turn(held, "a", commit_for(held, release=False))
    assert store.summary(KEY) is None
    after = store.save_summary(held, "a", "the customer said hi", upto=2, folded_tokens=5)
    assert store.summary(KEY) == "the customer said hi"
    assert (after.summary_upto, after.version) == (2, held.version + 1)
    assert after.pending_tokens == held.pending_tokens - 5
    assert store.head(KEY) == after
    again = store.save_summary(after, "a", "x" * 40_000, upto=2, folded_tokens=10**6)
    assert again.pending_tokens == 0
    assert len(store.summary(KEY) or "") == 32_000


# --- messages and delete ---------------------------------------------------------------


def test_messages_page_by_index(store: SessionStore) -> None:
    head = store.acquire_lock(created(store).key, "a", NOW, LEASE)
    for turn in range(1, 5):
        head = store.commit_turn(
            head, "a", commit_for(head, (f"u{turn}", f"a{turn}"), release=False)
        )
    indices = [m.index for m in store.messages(KEY, after=0, limit=100, newest_first=False)]
    assert indices == list(range(1, 9))
    assert [m.index for m in store.messages(KEY, after=2, limit=3, newest_first=False)] == [3, 4, 5]
    assert [m.index for m in store.messages(KEY, after=2, limit=3, newest_first=True)] == [6, 7, 8]
    assert store.messages(KEY, after=8, limit=3, newest_first=True) == []
    third = store.messages(KEY, after=2, limit=1, newest_first=False)[0]
    assert (third.role, third.content, third.turn) == ("user", "u2", 2)
    other = SessionKey("tenant-a", "support", "s_2")
    created(store, other)
    assert store.messages(other, after=0, limit=100, newest_first=False) == []


def test_delete_removes_the_session(store: SessionStore) -> None:
    head = store.acquire_lock(created(store).key, "a", NOW, LEASE)
    head = store.commit_turn(head, "a", commit_for(head, release=False))
    store.save_summary(head, "a", "s", upto=2, folded_tokens=1)
    store.take_ticket(KEY, "m", "r", NOW, int(NOW) + 99)
    store.delete(KEY)
    assert store.head(KEY) is None
    assert store.messages(KEY, after=0, limit=100, newest_first=False) == []
    assert store.summary(KEY) is None and store.entry(KEY, 1) is None
    with pytest.raises(SessionGone):
        store.delete(KEY)


# --- the turn's first read -------------------------------------------------------------


def test_read_turn_returns_head_counter_summary_and_newest_messages(store: SessionStore) -> None:
    empty = store.read_turn(KEY, limit=4)
    assert (empty.head, empty.last_ticket, empty.summary, empty.messages) == (None, 0, None, ())
    created(store)
    fresh = store.read_turn(KEY, limit=4)
    assert fresh.head == store.head(KEY)
    assert (fresh.last_ticket, fresh.summary, fresh.summary_upto, fresh.messages) == (
        0,
        None,
        0,
        (),
    )
    for i in (1, 2):
        store.take_ticket(KEY, f"m{i}", f"r{i}", NOW, int(NOW) + 99)
    head = store.acquire_lock(KEY, "a", NOW, LEASE)
    for turn in range(1, 4):
        head = store.commit_turn(
            head, "a", commit_for(head, (f"u{turn}", f"a{turn}"), release=False)
        )
    head = store.save_summary(head, "a", "they said hi", upto=2, folded_tokens=5)
    store.release_lock(KEY, "a")
    view = store.read_turn(KEY, limit=4)
    assert view.head == store.head(KEY)
    assert (view.last_ticket, view.summary, view.summary_upto) == (2, "they said hi", 2)
    # The newest messages, oldest first, whatever the summary covers.
    assert list(view.messages) == store.messages(KEY, after=0, limit=4, newest_first=True)
    assert [m.index for m in view.messages] == [3, 4, 5, 6]
    assert view.head is not None
    assert view.window(view.head, 4) == store.messages(KEY, after=2, limit=4, newest_first=True)
    assert view.summary_for(view.head) == (True, "they said hi")


@pytest.mark.parametrize("hint", [None, 0, 1, 2, 7])
def test_a_ticket_hint_that_is_wrong_still_takes_the_next_ticket(
    store: SessionStore, hint: int | None
) -> None:
    created(store)
    for i in (1, 2):
        store.take_ticket(KEY, f"m{i}", f"r{i}", NOW, int(NOW) + 99)
    assert store.take_ticket(KEY, "m3", "r3", NOW, int(NOW) + 99, last=hint) == 3
    assert store.take_ticket(KEY, "m4", "r4", NOW, int(NOW) + 99, last=3) == 4
    assert store.read_turn(KEY, limit=1).last_ticket == 4
    for ticket in (1, 2, 3, 4):
        entry = store.entry(KEY, ticket)
        assert entry is not None and (entry.message, entry.status) == (f"m{ticket}", "queued")
    assert store.entry(KEY, 5) is None


def test_a_ticket_hint_never_takes_a_ticket_on_a_gone_session(store: SessionStore) -> None:
    with pytest.raises(SessionGone):
        store.take_ticket(KEY, "m", "r", NOW, int(NOW) + 99, last=0)
    created(store, expires_at=int(NOW) - 1)
    with pytest.raises(SessionGone):
        store.take_ticket(KEY, "m", "r", NOW, int(NOW) + 99, last=0)


def test_ticket_and_lock_in_one_write(store: SessionStore) -> None:
    head = created(store)
    taken = store.take_ticket_and_lock(head, "hi", "r1", NOW, last=0, owner="a", lease_s=LEASE)
    assert taken is not None
    ticket, held = taken
    assert ticket == 1
    assert held == store.head(KEY)
    assert (held.lock_owner, held.lock_until_ms, held.version) == (
        "a",
        int(NOW * 1000) + LEASE * 1000,
        head.version + 1,
    )
    entry = store.entry(KEY, 1)
    assert entry is not None and (entry.status, entry.message, entry.request_id) == (
        "queued",
        "hi",
        "r1",
    )
    # The next message's ticket follows, whichever way it is taken.
    assert store.take_ticket(KEY, "m2", "r2", NOW, int(NOW) + 99) == 2
    # A dead holder's expired lock is taken over in the same write.
    later = NOW + LEASE + 1
    view = store.read_turn(KEY, limit=1)
    assert view.head is not None
    again = store.take_ticket_and_lock(view.head, "m3", "r3", later, last=2, owner="b", lease_s=1)
    assert again is not None and again[0] == 3 and again[1].lock_owner == "b"
    assert again[1] == store.head(KEY)


def test_ticket_and_lock_writes_nothing_unless_all_of_it_holds(store: SessionStore) -> None:
    head = created(store)
    store.take_ticket(KEY, "m1", "r1", NOW, int(NOW) + 99)

    def attempt(h: Head, last: int, now_s: float = NOW) -> tuple[int, Head] | None:
        return store.take_ticket_and_lock(h, "x", "rx", now_s, last=last, owner="z", lease_s=LEASE)

    assert attempt(head, last=0) is None  # the counter moved on since it was read
    assert attempt(head, last=5) is None
    held = store.acquire_lock(KEY, "a", NOW, LEASE)
    assert attempt(head, last=1) is None  # the head changed (locked) since it was read
    assert attempt(held, last=1) is None  # read while locked: a live turn holds it
    store.release_lock(KEY, "a")
    current = store.head(KEY)
    assert current is not None
    assert attempt(current, last=1, now_s=current.expires_at + 1) is None  # expired
    assert store.head(KEY) == current
    assert store.entry(KEY, 2) is None
    assert store.read_turn(KEY, limit=1).last_ticket == 1
    assert attempt(current, last=1) is not None  # all of it holds: ticket 2 and the lock
    store.delete(KEY)
    assert attempt(current, last=2) is None  # gone

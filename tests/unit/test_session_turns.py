"""Session turns on the in-memory store: ordering, double-texting policies, lock takeover.

No moto, no HTTP, no model: a deterministic clock (``sleep`` advances it), a tiny
turn runner that answers "reply to: <message>", and ``MemorySessionStore``.
Several ``SessionService`` objects on one store stand for separate Lambda
instances sharing the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from functions.agents import load_agent
from stratus.agents import AgentSpec, ToolContext
from stratus.config import Settings
from stratus.errors import ModelUnavailable, SessionBusy
from stratus.sessions import (
    LostLock,
    MemorySessionStore,
    SessionKey,
    SessionService,
    StoredMessage,
    TurnCommit,
)
from stratus.usage import Usage

LEASE_S = 30


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Result:
    output: str
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))
    cost_usd: Decimal = Decimal("0.001")
    model: str = "gpt-5-mini"
    #: The runner's executed tool calls (``stratus.runner.ToolCallRecord``); none here.
    tool_calls: list[Any] = field(default_factory=list)


class Runner:
    """Answers "reply to: <message>"; ``during`` runs inside a turn (another instance acts)."""

    def __init__(self) -> None:
        self.inputs: list[str] = []
        self.histories: list[list[dict[str, Any]]] = []
        self.during: Callable[[str], None] | None = None

    def run(
        self, user_input: Any, *, ctx: ToolContext, deadline: Any = None, history: Any = ()
    ) -> Result:
        self.inputs.append(str(user_input))
        self.histories.append(list(history))
        if self.during is not None:
            hook, self.during = self.during, None
            hook(str(user_input))
        return Result(f"reply to: {user_input}")


@dataclass
class World:
    clock: Clock
    store: MemorySessionStore
    runner: Runner
    spec: AgentSpec

    def service(self, *, sleep: Callable[[float], None] | None = None) -> SessionService:
        return SessionService(
            self.spec,
            Settings(),
            self.store,
            self.runner,
            Runner(),
            clock=self.clock,
            sleep=sleep or self.clock.sleep,
        )


def world(**policy: Any) -> World:
    spec = load_agent("support")
    assert spec.sessions is not None
    sessions = spec.sessions.model_copy(update={"lock_lease_s": LEASE_S, **policy})
    return World(
        Clock(), MemorySessionStore(), Runner(), spec.model_copy(update={"sessions": sessions})
    )


def history(w: World, key: SessionKey) -> list[tuple[str, str]]:
    return [
        (m.role, m.content) for m in w.store.messages(key, after=0, limit=200, newest_first=False)
    ]


def new_session(w: World) -> tuple[SessionService, SessionKey]:
    svc = w.service()
    sid = svc.create("t1", {})["session_id"]
    return svc, svc.key("t1", sid)


# --- enqueue: arrival order ----------------------------------------------------------


def test_enqueued_messages_are_answered_in_arrival_order_and_withdrawn_ones_skipped() -> None:
    w = world(policy="enqueue")
    svc, key = new_session(w)

    def arrivals(_: str) -> None:
        # While turn 1 runs, three more messages arrive from other instances.
        for text in ("second", "third", "fourth"):
            w.store.take_ticket(key, text, f"rid-{text}", w.clock(), 10**10)

    w.runner.during = arrivals
    first = svc.post_message("t1", key.session_id, "first", request_id="rid-first")
    assert (first["turn"], first["reply"]) == (1, "reply to: first")
    # The waiter of "third" gave up: its message is withdrawn, never answered.
    assert w.store.cancel_entry(key, 3)

    fifth = w.service().post_message("t1", key.session_id, "fifth", request_id="rid-fifth")

    # The lock holder ran every ticket up to its own, in order, skipping the withdrawn one.
    assert w.runner.inputs == ["first", "second", "fourth", "fifth"]
    assert fifth["turn"] == 4 and fifth["reply"] == "reply to: fifth"
    assert history(w, key) == [
        (role, text if role == "user" else f"reply to: {text}")
        for text in ("first", "second", "fourth", "fifth")
        for role in ("user", "assistant")
    ]
    # Each waiter finds its own reply in its queue entry.
    for ticket, text, turn in ((2, "second", 2), (4, "fourth", 3)):
        entry = w.store.entry(key, ticket)
        assert entry is not None and entry.status == "done"
        assert entry.result is not None
        assert (entry.result["reply"], entry.result["turn"]) == (f"reply to: {text}", turn)
        assert entry.result["request_id"] == f"rid-{text}"
    third = w.store.entry(key, 3)
    assert third is not None and (third.status, third.result) == ("cancelled", None)
    head = w.store.head(key)
    assert head is not None
    assert (head.turns, head.msg_count, head.done_ticket, head.lock_owner) == (4, 8, 5, None)


def test_a_waiting_message_is_answered_by_whoever_holds_the_lock() -> None:
    w = world(policy="enqueue")
    _, key = new_session(w)
    w.store.acquire_lock(key, "busy-instance", w.clock(), LEASE_S)
    other = w.service()

    def meanwhile(seconds: float) -> None:
        # While A waits in line: the busy turn ends and instance B sends a message.
        w.clock.sleep(seconds)
        w.store.release_lock(key, "busy-instance")
        assert other.post_message("t1", key.session_id, "from B", request_id="b")["turn"] == 2

    waiting = w.service(sleep=meanwhile)
    reply = waiting.post_message("t1", key.session_id, "from A", request_id="a")
    # B ran A's ticket first (arrival order); A returned the stored result, no second turn.
    assert (reply["turn"], reply["reply"], reply["request_id"]) == (1, "reply to: from A", "a")
    assert w.runner.inputs == ["from A", "from B"]


def test_an_enqueued_message_that_waits_too_long_is_withdrawn() -> None:
    w = world(policy="enqueue", enqueue_wait_s=1.0)
    svc, key = new_session(w)
    w.store.acquire_lock(key, "slow", w.clock(), LEASE_S)
    with pytest.raises(SessionBusy) as busy:
        svc.post_message("t1", key.session_id, "hello", request_id="r1")
    assert busy.value.details["queued"] is False
    entry = w.store.entry(key, 1)
    assert entry is not None and entry.status == "cancelled"
    assert w.runner.inputs == []


# --- reject ------------------------------------------------------------------------------


def test_reject_answers_session_busy_while_a_live_turn_holds_the_lock() -> None:
    w = world(policy="reject")
    svc, key = new_session(w)
    w.store.acquire_lock(key, "live", w.clock(), LEASE_S)
    with pytest.raises(SessionBusy) as busy:
        svc.post_message("t1", key.session_id, "hi", request_id="r1")
    assert busy.value.code == "session_busy"
    assert busy.value.details == {"policy": "reject"}
    assert w.runner.inputs == [] and history(w, key) == []
    w.store.release_lock(key, "live")
    assert svc.post_message("t1", key.session_id, "hi", request_id="r2")["turn"] == 1


def test_reject_runs_turns_one_after_another() -> None:
    w = world(policy="reject")
    svc, key = new_session(w)
    for turn, text in enumerate(("one", "two", "three"), start=1):
        assert svc.post_message("t1", key.session_id, text, request_id=text)["turn"] == turn
    head = w.store.head(key)
    assert head is not None and (head.turns, head.lock_owner) == (3, None)


# --- lock takeover -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["reject", "enqueue"])
def test_a_dead_holders_lock_is_taken_over_once_its_lease_ran_out(policy: str) -> None:
    w = world(policy=policy, enqueue_wait_s=0.5)
    svc, key = new_session(w)
    dead = w.store.acquire_lock(key, "dead-lambda", w.clock(), LEASE_S)
    w.clock.sleep(LEASE_S - 1)
    with pytest.raises(SessionBusy):  # still within its lease: a live turn for all we know
        w.service().post_message("t1", key.session_id, "too early", request_id="x")
    w.clock.sleep(2)
    reply = svc.post_message("t1", key.session_id, "after", request_id="r")
    assert reply["turn"] == 1
    # The dead turn can never commit late: the takeover moved the version on.
    with pytest.raises(LostLock):
        w.store.commit_turn(dead, "dead-lambda", _commit(dead, "late"))
    assert history(w, key) == [("user", "after"), ("assistant", "reply to: after")]


def test_a_crashed_turns_queued_message_is_answered_by_the_next_holder() -> None:
    w = world(policy="enqueue")
    svc, key = new_session(w)
    # A Lambda took ticket 1, locked the session, claimed the entry and died.
    w.store.take_ticket(key, "from the crashed request", "crashed", w.clock(), 10**10)
    w.store.acquire_lock(key, "dead-lambda", w.clock(), LEASE_S)
    assert w.store.claim_entry(key, 1)
    w.clock.sleep(LEASE_S + 1)
    reply = svc.post_message("t1", key.session_id, "second", request_id="r2")
    assert reply["turn"] == 2
    assert w.runner.inputs == ["from the crashed request", "second"]


def test_a_stale_holders_commit_is_refused_and_the_message_answered_once() -> None:
    """A turn outlives its lease; another instance takes over and runs the same ticket.

    The stale turn's commit is refused (``LostLock``), so the ticket is committed
    once, and the stale request returns the result the new holder stored.
    """
    w = world(policy="enqueue")
    stale, key = new_session(w)
    taker = w.service()

    def lease_runs_out(_: str) -> None:
        w.clock.sleep(LEASE_S + 1)
        reply = taker.post_message("t1", key.session_id, "newer", request_id="n")
        assert reply["turn"] == 2

    w.runner.during = lease_runs_out
    reply = stale.post_message("t1", key.session_id, "slow", request_id="s")
    assert (reply["turn"], reply["reply"]) == (1, "reply to: slow")
    # The slow message ran twice (the stale turn, the takeover) but was committed once.
    assert w.runner.inputs == ["slow", "slow", "newer"]
    assert [text for role, text in history(w, key) if role == "user"] == ["slow", "newer"]
    head = w.store.head(key)
    assert head is not None and (head.turns, head.done_ticket, head.lock_owner) == (2, 2, None)


def test_reject_maps_a_lost_lock_to_session_busy() -> None:
    w = world(policy="reject")
    svc, key = new_session(w)

    def taken_over(_: str) -> None:
        w.clock.sleep(LEASE_S + 1)
        assert w.service().post_message("t1", key.session_id, "b", request_id="b")["turn"] == 1

    w.runner.during = taken_over
    with pytest.raises(SessionBusy) as busy:
        svc.post_message("t1", key.session_id, "a", request_id="a")
    assert "took over" in busy.value.message
    assert [text for role, text in history(w, key) if role == "user"] == ["b"]


def _commit(head: Any, text: str) -> TurnCommit:
    now_ms = int(head.lock_until_ms)
    return TurnCommit(
        messages=(
            StoredMessage.new(head.msg_count + 1, "user", text, head.turns + 1, now_ms),
            StoredMessage.new(head.msg_count + 2, "assistant", text, head.turns + 1, now_ms),
        ),
        turns=head.turns + 1,
        usage=head.usage,
        cost_usd=head.cost_usd,
        pending_tokens=head.pending_tokens,
        expires_at=head.expires_at,
        lock_until_ms=now_ms,
        release=True,
    )


# --- what a turn reads -------------------------------------------------------------------


class Counting:
    """A store that records which of its methods the service calls, in order."""

    def __init__(self, store: MemorySessionStore) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("enqueue", ["read_turn", "take_ticket_and_lock", "commit_turn"]),
        ("reject", ["read_turn", "acquire_lock", "commit_turn"]),
    ],
)
def test_an_uncontended_turn_reads_once_then_writes(policy: str, expected: list[str]) -> None:
    """One read (head, counter, summary, window together), then two writes: the ticket
    with the lock (or the lock), and the commit that releases."""
    w = world(policy=policy)
    svc, key = new_session(w)
    for text in ("one", "two", "three"):
        svc.post_message("t1", key.session_id, text, request_id=text)
    counting = Counting(w.store)
    measured = SessionService(
        w.spec, Settings(), counting, w.runner, Runner(), clock=w.clock, sleep=w.clock.sleep
    )
    reply = measured.post_message("t1", key.session_id, "four", request_id="four")
    assert reply["turn"] == 4
    assert counting.calls == expected
    assert [m["content"] for m in w.runner.histories[-1]] == [
        text if n % 2 == 0 else f"reply to: {text}"
        for text in ("one", "two", "three")
        for n in (0, 1)
    ]


def test_a_turn_committed_after_the_first_read_is_in_the_next_turns_context() -> None:
    """The read before the lock is stale once another turn commits: the turn reads again."""
    w = world(policy="enqueue")
    _, key = new_session(w)
    w.store.acquire_lock(key, "busy", w.clock(), LEASE_S)

    def meanwhile(seconds: float) -> None:
        # While A waits in line, the busy turn commits a turn and a summary, and releases.
        w.clock.sleep(seconds)
        head = w.store.head(key)
        if head is None or head.lock_owner != "busy":
            return
        head = w.store.commit_turn(head, "busy", _commit(head, "the busy turn"))
        head = w.store.acquire_lock(key, "busy", w.clock(), LEASE_S)
        head = w.store.save_summary(head, "busy", "an old summary", upto=1, folded_tokens=1)
        w.store.release_lock(key, "busy")

    waiting = w.service(sleep=meanwhile)
    reply = waiting.post_message("t1", key.session_id, "from A", request_id="a")
    assert reply["turn"] == 2
    assert w.runner.histories == [
        [
            {"role": "system", "content": "Summary of the earlier conversation:\nan old summary"},
            {"role": "assistant", "content": "the busy turn"},
        ]
    ]


def test_a_holder_that_died_after_taking_ticket_and_lock_is_taken_over_in_order() -> None:
    """Killed right after its first write (ticket and lock together): its message is
    answered first by the next holder once the lease ran out, and its late commit fails."""
    w = world(policy="enqueue", enqueue_wait_s=LEASE_S + 5)
    svc, key = new_session(w)
    view = w.store.read_turn(key, limit=40)
    assert view.head is not None
    taken = w.store.take_ticket_and_lock(
        view.head, "from the dead one", "dead", w.clock(), last=0, owner="dead", lease_s=LEASE_S
    )
    assert taken is not None
    ticket, dead = taken
    assert ticket == 1
    reply = svc.post_message("t1", key.session_id, "second", request_id="r2")  # waits, takes over
    assert reply["turn"] == 2
    assert w.runner.inputs == ["from the dead one", "second"]
    first = w.store.entry(key, 1)
    assert first is not None and first.status == "done" and first.result is not None
    assert first.result["request_id"] == "dead"
    with pytest.raises(LostLock):
        w.store.commit_turn(dead, "dead", _commit(dead, "late"))
    head = w.store.head(key)
    assert head is not None and (head.turns, head.done_ticket, head.lock_owner) == (2, 2, None)


@pytest.mark.parametrize("policy", ["enqueue", "reject"])
def test_a_turn_that_fails_after_summarising_answers_its_error_and_is_not_rerun(
    policy: str,
) -> None:
    """The summary was saved (the head moved on), then the turn's model call failed: the
    caller gets that error, the message is finished as failed, never run again later."""
    w = world(policy=policy, max_recent_messages=2)
    svc, key = new_session(w)
    for text in ("one", "two"):
        svc.post_message("t1", key.session_id, text, request_id=text)

    def fails(_: str) -> None:
        raise ModelUnavailable("the model is down")

    w.runner.during = fails  # the summariser (its own runner) succeeds first
    with pytest.raises(ModelUnavailable):
        svc.post_message("t1", key.session_id, "three", request_id="three")
    head = w.store.head(key)
    assert head is not None and head.summary_upto > 0 and head.lock_owner is None
    after = svc.post_message("t1", key.session_id, "four", request_id="four")
    assert after["turn"] == 3
    assert w.runner.inputs == ["one", "two", "three", "four"]  # "three" ran once
    if policy == "enqueue":
        failed = w.store.entry(key, 3)
        assert failed is not None and failed.status == "failed"
        assert failed.error is not None and failed.error["code"] == "model_unavailable"

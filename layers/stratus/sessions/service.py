"""The session service: create, read, delete, and one turn per message, correct under
concurrency across any number of Lambda instances.

Ordering (``enqueue``): a message takes ticket ``n`` in the same write that stores
it as a queue entry, so a ticket never exists without its message. The lock
holder processes tickets strictly in order (``done_ticket + 1`` first), whoever
sent them: a waiter that died still has its message answered, in line. A waiter
that runs out of ``enqueue_wait_s`` withdraws its message (the entry becomes
``cancelled``, skipped by the processor) and answers 409 ``session_busy``: a 409
always means "not applied", so a retry is safe. ``reject`` answers 409 at once
while a turn holds the lock.

The lock has a lease: a turn whose Lambda died leaves a lock that expires, the
next holder takes it over and bumps the head's version, so a late commit of the
dead turn can never apply (the store raises ``LostLock``). Nothing here knows
Lambda, HTTP or DynamoDB: storage is a :class:`~stratus.sessions.store.SessionStore`,
model calls go through a :class:`TurnRunner`.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from stratus.agents import AgentSpec, CallScope, Principal, SessionPolicy, ToolContext
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
from stratus.gateway_bookkeeping import deferred
from stratus.observability import logger
from stratus.release_tags import ReleaseTagged, emit_task, is_task_error
from stratus.sessions.context import (
    build_history,
    keep_from,
    read_context,
    should_summarize,
    summarizer_input,
)
from stratus.sessions.model import (
    MAX_METADATA_BYTES,
    MAX_STORED_CHARS,
    Head,
    LockBusy,
    LostLock,
    SessionGone,
    SessionKey,
    StoredMessage,
    TurnCommit,
    TurnFailed,
    TurnView,
    iso,
    raise_stored,
)
from stratus.sessions.store import SessionStore, TurnRunner
from stratus.stream_events import turn_events
from stratus.task_metrics import task_clock, task_ended
from stratus.tokens import chat_message_tokens
from stratus.usage import Usage

if TYPE_CHECKING:
    from stratus.aws import AwsClients
    from stratus.reviews import Reviews

#: A turn is not started with less time than this left before the deadline margin.
MIN_TURN_S = 3.0


@dataclass(frozen=True)
class TurnOutcome:
    head: Head
    response: dict[str, Any]
    #: What the session holds after the turn, as far as the next turn reads it.
    view: TurnView


class SessionService(ReleaseTagged):
    """Sessions of one agent: create, read, delete, and post a message (one turn); each
    turn's answer and stored reply carry the agent's release (:mod:`stratus.release_tags`)."""

    #: Human review sampling (the composition root sets it); None: no turn is offered.
    reviews: Reviews | None = None

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
        clients: AwsClients | None = None,
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
        self._clients = clients
        self._system_tokens = chat_message_tokens("system", spec.system_prompt)

    # -- create / read / delete

    def _context(
        self, key: SessionKey, request_id: str, step: str, who: Principal | None = None
    ) -> ToolContext:
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
            clients=self._clients,
            **(who or Principal()).context(),
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
        return self._live(key, self._store.head(key))

    def _live(self, key: SessionKey, head: Head | None) -> Head:
        """``head`` if it exists and has not expired; else ``SessionNotFound``."""
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
                    **({"release": m.release} if m.release else {}),
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
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        # The sender (role, end customer) travels with the message, queued ones included.
        request_id = (principal or Principal()).tag(request_id)
        limit = self.policy.max_message_chars
        if len(message) > limit:
            raise MessageTooLarge(
                f"the message is {len(message)} characters; agent {self.spec.name} "
                f"accepts at most {limit} per session message",
                details={"limit": limit, "size": len(message)},
            )
        key = self.key(tenant_id, session_id)
        # Round trip 1: the head, the ticket counter, the summary and the context window.
        view = self._store.read_turn(key, limit=self.policy.max_recent_messages)
        head = self._live(key, view.head)
        deadline = deadline or NoDeadline()
        try:
            # The model calls' post-call waves overlap the turn's tools and its commit, and
            # are all written before the reply is returned.
            with deferred():
                if self.policy.policy == "reject":
                    return self._reject(key, message, request_id, deadline, view)
                return self._enqueue(key, head, message, request_id, deadline, view)
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
        self, key: SessionKey, message: str, request_id: str, deadline: Deadline, view: TurnView
    ) -> dict[str, Any]:
        owner = uuid.uuid4().hex
        try:  # round trip 2 (the commit, which also releases, is the third)
            head = self._store.acquire_lock(key, owner, self._clock(), self._lease())
        except LockBusy as exc:
            raise SessionBusy(
                "a turn is running in this session; send the message when it has finished",
                details={"policy": "reject"},
            ) from exc
        try:
            outcome = self._turn(head, owner, message, request_id, deadline, None, True, view)
            return outcome.response
        except TurnFailed as failed:
            self._store.release_lock(key, owner)
            raise failed.error from None
        except BaseException:
            self._store.release_lock(key, owner)
            raise

    def _enqueue(
        self,
        key: SessionKey,
        head: Head,
        message: str,
        request_id: str,
        deadline: Deadline,
        view: TurnView,
    ) -> dict[str, Any]:
        owner = uuid.uuid4().hex
        # Round trip 2: the ticket and, if the session is free and unchanged since the
        # read, the lock, in one write (3: the commit, which also releases). Else the
        # ticket alone, then the lock when it is free.
        taken = self._store.take_ticket_and_lock(
            head,
            message,
            request_id,
            self._clock(),
            last=view.last_ticket,
            owner=owner,
            lease_s=self._lease(),
        )
        if taken is not None:
            ticket, held = taken
            return self._drain(held, owner, ticket, message, request_id, deadline, view)
        ticket = self._store.take_ticket(
            key, message, request_id, self._clock(), head.ends_at, last=view.last_ticket
        )
        give_up_at = self._clock() + self.policy.enqueue_wait_s
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
            return self._drain(held, owner, ticket, message, request_id, deadline, view)

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
        view: TurnView,
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
                    outcome = self._turn(head, owner, text, rid, deadline, current, mine, view)
                except LostLock:
                    # Another instance owns the session now (or it was deleted); our own
                    # message is withdrawn if still queued, else its result is awaited.
                    return self._give_up(key, ticket, deadline)
                except SessionGone:
                    raise
                except (StratusError, TurnFailed) as exc:
                    err, at = (exc.error, exc.head) if isinstance(exc, TurnFailed) else (exc, head)
                    logger.warning(
                        "session turn failed",
                        extra={"code": err.code, "ticket": current, "session": key.session_id},
                    )
                    error = {"code": err.code, "message": err.message, "details": err.details}
                    head = self._store.finish_entry(at, owner, current, error=error, release=mine)
                    if mine:
                        raise err from None
                    continue
                head, view = outcome.head, outcome.view
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
            raise_stored(entry.error)
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

    def _turn(
        self,
        head: Head,
        owner: str,
        message: str,
        request_id: str,
        deadline: Deadline,
        ticket: int | None,
        release: bool,
        view: TurnView | None = None,
    ) -> TurnOutcome:
        key = head.key
        started = task_clock()  # the turn's operator metrics (stratus.task_metrics)
        turn = head.turns + 1
        request_id, who = Principal.untag(request_id)
        usage, cost = Usage(), Decimal(0)
        summary, recent = read_context(self._store, head, view, self.policy.max_recent_messages)
        upto = head.summary_upto  # a summary written in this turn goes to long-term memory
        if should_summarize(head, self.policy):
            head, summary, recent, s_usage, s_cost = self._summarize(
                head, owner, summary, recent, turn, request_id, deadline
            )
            usage, cost = usage + s_usage, cost + s_cost
        fixed = self._system_tokens + chat_message_tokens("user", message)
        history, _ = build_history(
            summary=summary,
            recent=recent,
            budget_tokens=self.policy.context_token_budget,
            fixed_tokens=fixed,
        )
        ctx = self._context(key, request_id, f"turn-{turn}", who)
        try:
            streamed = turn_events(request_id)  # a streamed turn's frames (issue 17)
            result = self._runner.run(
                message, ctx=ctx, deadline=deadline, history=history, **streamed
            )
        except Exception as err:
            task_ended(self.spec.name, "session", error=err, started=started)
            if is_task_error(err):  # the agent failed (not a refusal of the message)
                emit_task(self.spec.name, self.release, cost_usd=None, failed=True)
            if not isinstance(err, StratusError):
                raise
            raise TurnFailed(err, head) from None  # with the head as it is now (a summary)
        reply = result.output if isinstance(result.output, str) else json.dumps(result.output)
        usage, cost = usage + result.usage, cost + result.cost_usd
        memory = getattr(self._runner, "memory", None)  # long-term memory (issue 18)
        if memory is not None:  # this turn's facts and a new summary; billed to the turn
            new_summary = summary if head.summary_upto > upto else None
            spent = memory.after_turn(ctx, message, reply, summary=new_summary, deadline=deadline)
            usage, cost = usage + spent.usage, cost + spent.cost_usd
        now = self._clock()
        now_ms = int(now * 1000)
        stored_reply = reply[:MAX_STORED_CHARS]
        user = StoredMessage.new(head.msg_count + 1, "user", message, turn, now_ms)
        assistant = StoredMessage.new(
            head.msg_count + 2, "assistant", reply, turn, now_ms, release=self.release
        )
        total_cost = head.cost_usd + cost
        response = {
            "reply": reply,
            "turn": turn,
            "usage": usage.model_dump(),
            "cost_usd": float(cost),
            "session_cost_usd": float(total_cost),
            "request_id": request_id,
            "tool_calls": [call.to_json() for call in result.tool_calls],
            **self.release_fields,
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
        emit_task(self.spec.name, self.release, cost_usd=cost, failed=False)
        task_ended(
            self.spec.name, "session", result=result, usage=usage, cost_usd=cost, started=started
        )
        if self.reviews is not None:  # a share of turns is queued for review: 1 PutItem
            self.reviews.offer(
                key.tenant_id,
                self.spec.name,
                self.release,
                "session",
                f"{key.session_id}/turn-{turn}",
                message,
                reply,
                result.model,
            )
        after = TurnView(
            head=head,
            summary=summary,
            summary_upto=head.summary_upto if summary is not None else 0,
            messages=(*recent, user, assistant),
        )
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
        return TurnOutcome(head=head, response=response, view=after)

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
        first_kept = keep_from(head, recent, self.policy)
        if len(recent) == head.msg_count - head.summary_upto:
            oldest = recent  # the window holds every unsummarised message: no read
        else:  # a backlog longer than the window: fold its oldest part
            oldest = self._store.messages(
                head.key,
                after=head.summary_upto,
                limit=self.policy.max_recent_messages,
                newest_first=False,
            )
        fold = [m for m in oldest if m.index < first_kept]
        if not fold:
            return head, summary, recent, Usage(), Decimal(0)
        key = head.key
        ctx = self._context(key, request_id, f"turn-{turn}-summary")
        result = self._summarizer.run(summarizer_input(summary, fold), ctx=ctx, deadline=deadline)
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

"""What a turn sends the model: the summary and the newest turns that fit the budget.

The prompt holds the system prompt, the rolling summary, the newest unsummarised
turns that fit ``context_token_budget`` and the new message. Token counts come
from :mod:`stratus.tokens` (the gateway's upper bound, per chat message), so the
budget is never exceeded by the real count. Once the unsummarised part exceeds
``summarize_after_tokens`` (or ``max_recent_messages``), the older turns are
folded into the summary by a cheap-tier call (:func:`summarizer_spec`), keeping
the newest turns (half the budget, half the message window) verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratus import fanout
from stratus.agents import AgentSpec, Limits, SessionPolicy
from stratus.sessions.model import Head, StoredMessage, TurnView
from stratus.tokens import chat_message_tokens

if TYPE_CHECKING:
    from stratus.sessions.store import SessionStore

#: Each folded message is cut to this many characters in the summariser's input.
SUMMARY_INPUT_MESSAGE_CHARS = 2_000
SUMMARIZER_DIR = Path(__file__).resolve().parent.parent / "data" / "summarizer"


def _by_turn(messages: Sequence[StoredMessage]) -> dict[int, list[StoredMessage]]:
    turns: dict[int, list[StoredMessage]] = {}
    for message in messages:
        turns.setdefault(message.turn, []).append(message)
    return turns


def summary_message(summary: str) -> dict[str, Any]:
    """The system message that carries the rolling summary."""
    return {"role": "system", "content": f"Summary of the earlier conversation:\n{summary}"}


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
        message = summary_message(summary)
        messages.append(message)
        used += chat_message_tokens(message["role"], message["content"])
    turns = _by_turn(recent)
    chosen: list[StoredMessage] = []
    for turn in sorted(turns, reverse=True):
        cost = sum(m.tokens for m in turns[turn])
        if used + cost > budget_tokens:
            break
        used += cost
        chosen[:0] = sorted(turns[turn], key=lambda m: m.index)
    messages.extend({"role": m.role, "content": m.content} for m in chosen)
    return messages, used - fixed_tokens


def read_context(
    store: SessionStore, head: Head, view: TurnView | None, limit: int
) -> tuple[str | None, list[StoredMessage]]:
    """The summary and the newest ``limit`` unsummarised messages under the locked ``head``:
    from ``view`` (read with the head, before the lock) when it holds exactly them, no
    round trip; else read again, both reads together (one round trip)."""
    if view is not None:
        recent = view.window(head, limit)
        known, summary = view.summary_for(head)
    else:
        recent, (known, summary) = None, (not head.summary_upto, None)
    reads: dict[str, Callable[[], Any]] = {}
    if recent is None:
        reads["recent"] = lambda: store.messages(
            head.key, after=head.summary_upto, limit=limit, newest_first=True
        )
    if not known:
        reads["summary"] = lambda: store.summary(head.key)
    got = dict(zip(reads, fanout.values(fanout.run_all(list(reads.values()))), strict=True))
    return got.get("summary", summary), got.get("recent", recent or [])


def should_summarize(head: Head, policy: SessionPolicy) -> bool:
    unsummarized = head.msg_count - head.summary_upto
    return (
        head.pending_tokens > policy.summarize_after_tokens
        or unsummarized > policy.max_recent_messages
    )


def keep_from(head: Head, recent: Sequence[StoredMessage], policy: SessionPolicy) -> int:
    """The first message index kept verbatim: the newest whole turns within half the
    budget and half the message window; everything older is folded."""
    keep_budget = policy.context_token_budget // 2
    kept = 0
    first = head.msg_count + 1
    turns = _by_turn(recent)
    for number in sorted(turns, reverse=True):
        cost = sum(m.tokens for m in turns[number])
        if kept + cost > keep_budget or head.msg_count + 1 - first >= (
            policy.max_recent_messages // 2
        ):
            break
        kept += cost
        first = min(m.index for m in turns[number])
    return first


def summarizer_input(summary: str | None, fold: Sequence[StoredMessage]) -> str:
    """The summariser's input: the summary so far and the turns to fold into it."""
    lines = [f"Summary so far:\n{summary}" if summary else "Summary so far: (none)", ""]
    lines.append("Turns to fold into the summary:")
    for m in fold:
        lines.append(f"{m.role}: {m.content[:SUMMARY_INPUT_MESSAGE_CHARS]}")
    return "\n".join(lines)


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

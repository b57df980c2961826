"""What a session turn sends the model: token estimates and the history that fits."""

from __future__ import annotations

from stratus.sessions import Head, SessionKey, StoredMessage, TurnView, build_history
from stratus.sessions.context import summary_message
from stratus.tokens import (
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    chat_message_tokens,
    estimate_prompt_tokens,
    message_tokens,
)


def turn(number: int, text: str) -> list[StoredMessage]:
    return [
        StoredMessage.new(2 * number - 1, "user", text, number, 0),
        StoredMessage.new(2 * number, "assistant", f"re: {text}", number, 0),
    ]


def test_a_stored_message_is_estimated_as_the_gateway_bounds_it() -> None:
    message = StoredMessage.new(1, "user", "é" * 10, 1, 0)  # 20 UTF-8 bytes
    # 8 per message, then one token per started 3 bytes of each string: role, content, keys.
    expected = MESSAGE_OVERHEAD + 2 + 3 + 2 + 7  # "role", "content", "user", 20 bytes
    assert message.tokens == expected == chat_message_tokens("user", "é" * 10)
    prompt = [{"role": "user", "content": "é" * 10}]
    assert estimate_prompt_tokens(prompt) == REQUEST_OVERHEAD + message.tokens


def test_the_history_keeps_the_newest_whole_turns_within_the_budget() -> None:
    recent = [m for n in range(1, 6) for m in turn(n, f"question {n} " + "x" * 60)]
    per_turn = sum(m.tokens for m in recent[:2])
    fixed = 100
    messages, used = build_history(
        summary="they talked",
        recent=recent,
        budget_tokens=fixed + 40 + 2 * per_turn,
        fixed_tokens=fixed,
    )
    head = summary_message("they talked")
    assert messages[0] == head
    assert [m["content"] for m in messages[1:]] == [m.content for m in recent[-4:]]
    assert used == message_tokens(head) + 2 * per_turn
    assert fixed + used <= fixed + 40 + 2 * per_turn


def test_a_turn_that_does_not_fit_is_left_out_whole() -> None:
    recent = turn(1, "short") + turn(2, "y" * 3_000)
    messages, used = build_history(summary=None, recent=recent, budget_tokens=500, fixed_tokens=50)
    assert (messages, used) == ([], 0)  # the newest turn alone is over the budget
    messages, _ = build_history(summary=None, recent=recent[:2], budget_tokens=500, fixed_tokens=50)
    assert [m["role"] for m in messages] == ["user", "assistant"]


def head_at(msg_count: int, summary_upto: int = 0) -> Head:
    key = SessionKey("t1", "support", "s_1")
    return Head(key=key, created_ms=0, metadata={}, msg_count=msg_count, summary_upto=summary_upto)


def test_a_view_answers_only_when_it_holds_the_whole_window() -> None:
    messages = tuple(m for n in range(1, 4) for m in turn(n, f"q{n}"))  # indices 1..6
    view = TurnView(head=head_at(6), summary="s", summary_upto=2, messages=messages[1:])
    # The newest 3 after the summary, and everything after it.
    assert [m.index for m in view.window(head_at(6), 3) or []] == [4, 5, 6]
    assert [m.index for m in view.window(head_at(6, 2), 10) or []] == [3, 4, 5, 6]
    assert view.window(head_at(6), 10) is None  # index 1 was not read
    assert view.window(head_at(8), 3) is None  # a turn committed after the read
    assert view.window(head_at(0), 3) == []
    assert view.summary_for(head_at(6)) == (True, None)  # no summary needed
    assert view.summary_for(head_at(6, 2)) == (True, "s")
    assert view.summary_for(head_at(6, 4)) == (False, None)  # summarised again since

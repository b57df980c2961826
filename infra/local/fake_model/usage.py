"""Prompt token counts of the fake model: the simulated provider tokenizer and its cache.

These numbers are what the fake *provider* reports in ``usage``; they are not
Stratus's own estimate (``stratus.tokens``), which must stay an upper bound of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.local.fake_model.text import canonical, message_text


def simulated_provider_tokens(text: str) -> int:
    """Simulates the provider's tokenizer: one token per started group of four characters.

    It is the fake server's stand-in for a real provider's count (what lands in
    ``usage``), not Stratus's estimator (``stratus.tokens``).
    """
    return -(-len(text) // 4)


@dataclass(frozen=True)
class Segment:
    """One cacheable piece of a prompt (the tool list or one message)."""

    key: str
    tokens: int
    role: str | None = None
    text: str | None = None


def prompt_segments(messages: list[dict[str, Any]], tools: list[Any]) -> list[Segment]:
    """The prompt as cacheable pieces, in the order a provider would cache them.

    Tool definitions come first (OpenAI puts them ahead of the messages), then
    one piece per message. Their token counts add up to ``prompt_tokens``:
    the compact JSON of ``tools``, plus per message 4 tokens of overhead and
    its text (content, and the name and arguments of any tool calls).
    """
    segments = []
    if tools:
        text = canonical(tools)
        segments.append(Segment(key="tools:" + text, tokens=simulated_provider_tokens(text)))
    for message in messages:
        text = message_text(message)
        segments.append(
            Segment(
                key=canonical(message),
                tokens=4 + simulated_provider_tokens(text),
                role=str(message.get("role")),
                text=text,
            )
        )
    return segments


def common_prefix_tokens(current: list[Segment], earlier: list[Segment]) -> int:
    """Tokens at the start of ``current`` that ``earlier`` had too."""
    total = 0
    for mine, theirs in zip(current, earlier, strict=False):
        if mine.key == theirs.key:
            total += mine.tokens
            continue
        if mine.role is not None and mine.role == theirs.role and mine.text and theirs.text:
            shared = 0
            for a, b in zip(mine.text, theirs.text, strict=False):
                if a != b:
                    break
                shared += 1
            total += min(mine.tokens, 4 + shared // 4)
        break
    return total

"""Token usage as the provider reports it, normalised to four counters."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Tokens of one or more model calls.

    ``cached_input_tokens`` is a subset of ``input_tokens`` and
    ``reasoning_tokens`` a subset of ``output_tokens``, exactly as OpenAI
    reports them; pricing relies on that and never counts a token twice.
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0)
    cached_input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    @classmethod
    def from_openai(cls, usage: Any) -> Usage:
        """Read an ``openai`` ``CompletionUsage`` (or None) into our counters."""
        if usage is None:
            return cls()
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
        cached = getattr(prompt_details, "cached_tokens", None) or 0
        reasoning = getattr(completion_details, "reasoning_tokens", None) or 0
        input_tokens = usage.prompt_tokens or 0
        output_tokens = usage.completion_tokens or 0
        # Some compatible servers report details that exceed the totals; clamp
        # so a malformed report can never make a subset larger than its whole.
        return cls(
            input_tokens=input_tokens,
            cached_input_tokens=min(cached, input_tokens),
            output_tokens=output_tokens,
            reasoning_tokens=min(reasoning, output_tokens),
        )

"""What an agent's guardrails do (``AgentSpec.guardrails``): a plain, frozen policy.

Input screening has one action per category (``block``: the text is refused with
422 ``input_rejected``; ``flag``: it proceeds, audited and counted; ``allow``:
nothing happens). ``classifier`` adds one model call per request on the user's
input (``fast``: the agent's fast tier through the gateway); ``none`` is rules only.
Output filtering: ``redact`` replaces PII with typed placeholders (``[email]``...),
``allow`` leaves the reply as it is; ``output_moderation`` asks the fast tier
whether the reply is unsafe (502 ``output_blocked``). ``extra_patterns`` are
operator-defined PII patterns redacted as ``[<name>]``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Action = Literal["block", "flag", "allow"]
Category = Literal["injection", "jailbreak", "prompt_extraction"]
#: The screening categories, in the order a report lists them.
CATEGORIES: tuple[Category, ...] = ("injection", "jailbreak", "prompt_extraction")


class ExtraPattern(BaseModel):
    """An operator's PII pattern: matches are replaced with ``[<name>]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    pattern: str = Field(min_length=1, max_length=500)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        if compiled.match(""):
            raise ValueError("the pattern matches the empty string")
        return value


class GuardrailPolicy(BaseModel):
    """One agent's guardrails. The default flags every category and redacts output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    injection: Action = "flag"
    jailbreak: Action = "flag"
    prompt_extraction: Action = "flag"
    #: ``fast``: one extra model call (the fast tier, through the gateway) on the user's input.
    classifier: Literal["none", "fast"] = "none"
    #: Screen tool results too (indirect injection); they are always framed as data.
    screen_tool_results: bool = True
    output: Literal["redact", "allow"] = "redact"
    #: Ask the fast tier whether the reply is unsafe; an unsafe one is 502 ``output_blocked``.
    output_moderation: bool = False
    extra_patterns: tuple[ExtraPattern, ...] = ()

    def action(self, category: str) -> Action:
        """The action for ``category`` (an unknown category is flagged, never dropped)."""
        value = getattr(self, category, None) if category in CATEGORIES else None
        return value if value in ("block", "flag", "allow") else "flag"


#: The shipped customer-facing agents: injection and jailbreak are blocked.
CUSTOMER_FACING = GuardrailPolicy(injection="block", jailbreak="block")

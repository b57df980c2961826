"""The runtime's one token estimator: a conservative upper bound, no tokenizer.

Two things need a token count before a model call: the gateway reserves a call's
worst-case cost against the budgets, and a session fits its history into the
agent's context budget (and decides when to summarise). Both are served by this
module, with one rule, and nothing else in the runtime counts tokens.

Why a bound and not a tokenizer: the exact count needs the model's BPE encoding,
and ``tiktoken`` downloads its encodings at run time (a Lambda layer is built
offline, and a function may have no route to the internet); bundling encodings
per model would add megabytes to every cold start and still go stale when a
provider changes models. Both uses want an upper bound anyway: a reservation
that is too high is released at settlement, one that is too low lets concurrent
callers overspend; a context estimate that is too high wastes a little window,
one that is too low overflows it and the call fails.

The rule: one token per started group of three UTF-8 bytes of every string of a
chat message (its role and field names included), plus :data:`MESSAGE_OVERHEAD`
per message and :data:`REQUEST_OVERHEAD` per request. Byte-level BPE tokenizers
(o200k, cl100k) average about four characters per token on English and code and
one token per CJK character (three bytes), so this over-counts ordinary text; it
never needs to be exact, only never smaller than the real count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

BYTES_PER_TOKEN = 3
#: Per message: role, separators and the priming of the reply (OpenAI's cookbook says 3-4).
MESSAGE_OVERHEAD = 8
REQUEST_OVERHEAD = 16


def text_tokens(text: str) -> int:
    """The bound for one string: one token per started three UTF-8 bytes."""
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


def message_tokens(message: Mapping[str, Any]) -> int:
    """The bound for one chat message (``{"role": ..., "content": ...}``, tool calls too)."""
    return MESSAGE_OVERHEAD + sum(text_tokens(text) for text in _strings(dict(message)))


def chat_message_tokens(role: str, content: str) -> int:
    """:func:`message_tokens` of a plain text message."""
    return message_tokens({"role": role, "content": content})


def estimate_prompt_tokens(
    messages: Iterable[dict[str, Any]],
    tools: Iterable[Any] = (),
    response_schema: dict[str, Any] | None = None,
) -> int:
    """An upper bound of the prompt tokens of a chat request."""
    total = REQUEST_OVERHEAD + sum(message_tokens(message) for message in messages)
    tool_list = list(tools)
    if tool_list:
        total += text_tokens(json.dumps(tool_list, default=str, separators=(",", ":")))
    if response_schema is not None:
        total += text_tokens(json.dumps(response_schema, default=str, separators=(",", ":")))
    return total

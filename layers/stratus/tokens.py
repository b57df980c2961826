"""A conservative prompt-token count, for reserving a call's worst-case cost.

The exact count needs the model's BPE tokenizer, and ``tiktoken`` downloads its
encodings at run time (no network in Lambda layers built offline, none here).
So the reservation uses an upper bound instead: one token per started group of
three UTF-8 bytes of every string in the request, plus a per-message overhead.
Byte-level BPE tokenizers (o200k, cl100k) average about four characters per
token on English and code, and one token per CJK character (three bytes), so
this over-reserves: the budget check is stricter than the real spend, and the
settlement after the call releases the difference. It never needs to be exact,
only never to be smaller than the real count for ordinary text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

BYTES_PER_TOKEN = 3
#: Per message: role, separators and the priming of the reply (OpenAI's cookbook says 3-4).
MESSAGE_OVERHEAD = 8
REQUEST_OVERHEAD = 16


def _bytes_tokens(text: str) -> int:
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


def estimate_prompt_tokens(
    messages: Iterable[dict[str, Any]],
    tools: Iterable[Any] = (),
    response_schema: dict[str, Any] | None = None,
) -> int:
    """An upper bound of the prompt tokens of a chat request."""
    total = REQUEST_OVERHEAD
    for message in messages:
        total += MESSAGE_OVERHEAD + sum(_bytes_tokens(text) for text in _strings(message))
    tool_list = list(tools)
    if tool_list:
        total += _bytes_tokens(json.dumps(tool_list, default=str, separators=(",", ":")))
    if response_schema is not None:
        total += _bytes_tokens(json.dumps(response_schema, default=str, separators=(",", ":")))
    return total

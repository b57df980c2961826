"""The completion engine: what the fake model answers, and the usage it reports.

In order: a scripted :class:`Reply` if one is queued; else structured output
that validates against the requested JSON schema; else a tool call with
generated arguments when tools are offered; else a short text that echoes the
conversation. Usage follows fixed rules (:mod:`infra.local.fake_model.usage`),
with prompt caching and reasoning tokens modelled the way OpenAI reports them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_validator

from infra.local.fake_model.markers import FINGERPRINT, TEXT_PREFIX
from infra.local.fake_model.schema_faker import SchemaFaker
from infra.local.fake_model.text import content_text, last_user_text, truncate
from infra.local.fake_model.usage import (
    Segment,
    common_prefix_tokens,
    prompt_segments,
    simulated_provider_tokens,
)

_MAX_CACHE_ENTRIES = 32  # earlier prompts remembered per (api key, model)
_USAGE_KEYS = frozenset({"prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"})


class Reply(BaseModel):
    """A scripted answer, used before the default behaviour, first in first out.

    ``tool_calls`` is a list of ``{"name": ..., "arguments": {...}}`` (arguments
    may also be a JSON string, and an ``"id"`` may be given). ``usage`` replaces
    any of ``prompt_tokens``, ``cached_tokens``, ``completion_tokens`` and
    ``reasoning_tokens`` in the computed usage, to test cost accounting with
    exact numbers. Scripted content is sent as given, without the
    ``[fake model]`` prefix, because the script author decides what it says;
    the fingerprint and header still mark the response as fake. A reply with
    neither content nor tool calls answers an empty string.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, int] | None = None
    #: Only a request whose structured-output schema has this name takes the reply
    #: (e.g. ``"Facts"``, memory's fact extraction). Without it, any request but
    #: Stratus's own side calls (``BOOKKEEPING_SCHEMAS`` in the server) takes it.
    schema_name: str | None = None

    @field_validator("tool_calls")
    @classmethod
    def _valid_tool_calls(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for call in value or []:
            if not isinstance(call.get("name"), str) or not call["name"]:
                raise ValueError("every tool call needs a non-empty 'name'")
            arguments = call.get("arguments", {})
            if not isinstance(arguments, dict | str):
                raise ValueError("tool call 'arguments' must be an object or a JSON string")
        return value

    @field_validator("usage")
    @classmethod
    def _valid_usage(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            unknown = set(value) - _USAGE_KEYS
            if unknown:
                raise ValueError(f"unknown usage keys {sorted(unknown)}; use {sorted(_USAGE_KEYS)}")
            if any(number < 0 for number in value.values()):
                raise ValueError("usage numbers must be >= 0")
        return value


REPLIES = TypeAdapter(list[Reply] | Reply)


@dataclass
class Completion:
    """A finished answer, rendered either as one JSON body or as SSE chunks."""

    id: str
    created: int
    model: str
    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, Any]


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools") or []
    return [
        tool["function"]
        for tool in tools
        if tool.get("type", "function") == "function" and isinstance(tool.get("function"), dict)
    ]


def chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool to call by default, or None when no tool call is due.

    A tool is called when tools are offered and the conversation does not end
    with a tool result (after a result the agent expects an answer, otherwise
    an agent loop would never end). ``tool_choice="none"`` disables tools, a
    named ``tool_choice`` picks that tool, anything else the first tool.
    """
    functions = function_tools(body)
    if not functions or body["messages"][-1].get("role") == "tool":
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for function in functions:
            if function.get("name") == wanted:
                return function
    return functions[0]


def text_reply(messages: list[dict[str, Any]], user_text: str) -> str:
    """The default answer: says it is fake, echoes the question and any tool result."""
    snippet = truncate(user_text, 80)
    if snippet:
        text = f'{TEXT_PREFIX}This is an offline reply to "{snippet}".'
    else:
        text = f"{TEXT_PREFIX}This is an offline reply (there is no user message)."
    last = messages[-1]
    if last.get("role") == "tool":
        result = truncate(content_text(last.get("content")), 200)
        text += f' The tool returned: "{result}".'
    return text


def default_answer(
    body: dict[str, Any], messages: list[dict[str, Any]], user_text: str
) -> tuple[str | None, list[tuple[str | None, str, str]]]:
    """Structured output, else a tool call, else text (see the module docstring)."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
        value = SchemaFaker(schema, user_text, tool_arguments=False).generate()
        return json.dumps(value), []
    tool = chosen_tool(body)
    if tool is not None:
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        arguments = SchemaFaker(parameters, user_text, tool_arguments=True).generate()
        return None, [(None, str(tool.get("name", "tool")), json.dumps(arguments))]
    text = text_reply(messages, user_text)
    if response_format.get("type") == "json_object":
        text = json.dumps({"answer": text})
    return text, []


class CompletionEngine:
    """Builds completions; keeps the prompt cache and the id counters.

    ``lock`` guards that state; it is the owning server's lock, so one lock
    covers everything the server shares between request threads.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.cache: dict[tuple[str, str], deque[list[Segment]]] = {}
        self.completion_seq = 0
        self.tool_call_seq = 0

    def clear(self) -> None:
        """Forget the prompt cache and restart the ids; call with the lock held."""
        self.cache.clear()
        self.completion_seq = 0
        self.tool_call_seq = 0

    def complete(self, body: dict[str, Any], api_key: str, reply: Reply | None) -> Completion:
        """Build the answer and its usage; all numbers follow fixed rules."""
        model: str = body["model"]
        messages: list[dict[str, Any]] = body["messages"]
        user_text = last_user_text(messages)

        content: str | None
        calls: list[tuple[str | None, str, str]]  # (id, name, arguments JSON)
        if reply is not None:
            content = reply.content
            calls = []
            for call in reply.tool_calls or []:
                arguments = call.get("arguments", {})
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                calls.append((call.get("id"), call["name"], arguments))
            if content is None and not calls:
                content = ""
        else:
            content, calls = default_answer(body, messages, user_text)

        segments = prompt_segments(messages, body.get("tools") or [])
        prompt_tokens = sum(segment.tokens for segment in segments)
        reasoning = 8 + prompt_tokens % 32 if model.startswith(("o", "gpt-5")) else 0

        # Enforce the output limit the way OpenAI does: reasoning counts against
        # it first, visible output is cut off and the finish reason says so.
        limit = body.get("max_completion_tokens")
        if limit is None:
            limit = body.get("max_tokens")
        truncated = False
        if limit is not None:
            reasoning = min(reasoning, limit)
            budget = limit - reasoning
            if content is not None and simulated_provider_tokens(content) > budget:
                content, truncated = content[: budget * 4], True
            budget -= simulated_provider_tokens(content or "")
            fitted = []
            for call_id, name, arguments in calls:
                if simulated_provider_tokens(arguments) > budget:
                    arguments, truncated = arguments[: budget * 4], True
                budget -= simulated_provider_tokens(arguments)
                fitted.append((call_id, name, arguments))
            calls = fitted
        visible = simulated_provider_tokens(content or "") + sum(
            simulated_provider_tokens(arguments) for _, _, arguments in calls
        )

        with self.lock:
            cached = self._cached_tokens(api_key, model, segments, prompt_tokens)
            self.completion_seq += 1
            completion_id = f"chatcmpl-fake{self.completion_seq:06d}"
            tool_calls = []
            for call_id, name, arguments in calls:
                if call_id is None:
                    self.tool_call_seq += 1
                    call_id = f"call_{self.tool_call_seq}"
                tool_calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                )

        numbers = {
            "prompt_tokens": prompt_tokens,
            "cached_tokens": cached,
            "completion_tokens": visible + reasoning,
            "reasoning_tokens": reasoning,
        }
        if reply is not None and reply.usage:
            numbers.update(reply.usage)
        usage = {
            "prompt_tokens": numbers["prompt_tokens"],
            "completion_tokens": numbers["completion_tokens"],
            "total_tokens": numbers["prompt_tokens"] + numbers["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": numbers["cached_tokens"], "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": numbers["reasoning_tokens"],
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if truncated:
            finish_reason = "length"
        elif tool_calls:
            finish_reason = "tool_calls"
        else:
            finish_reason = "stop"
        return Completion(
            id=completion_id,
            created=int(time.time()),
            model=model,
            content=content,
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            usage=usage,
        )

    def _cached_tokens(
        self, api_key: str, model: str, segments: list[Segment], prompt_tokens: int
    ) -> int:
        """Prompt-cache hits as OpenAI reports them; call with the lock held.

        Caching applies from 1024 prompt tokens, in steps of 128, to the longest
        prefix shared with an earlier prompt of the same key and model. The
        prompt is then remembered for later requests.
        """
        history = self.cache.setdefault((api_key, model), deque(maxlen=_MAX_CACHE_ENTRIES))
        cached = 0
        if prompt_tokens >= 1024:
            shared = max((common_prefix_tokens(segments, old) for old in history), default=0)
            cached = min(shared, prompt_tokens) // 128 * 128
            if cached < 1024:
                cached = 0
        history.append(segments)
        return cached


def completion_json(completion: Completion) -> dict[str, Any]:
    """The answer as one ``chat.completion`` JSON body."""
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": FINGERPRINT,
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": completion.content,
                    "refusal": None,
                    "annotations": [],
                    "tool_calls": completion.tool_calls or None,
                },
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": completion.usage,
    }


def chunks(completion: Completion, include_usage: bool) -> Iterator[Any]:
    """The same answer as ``chat.completion.chunk`` events, then ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            event["usage"] = None
        return event

    def pieces(text: str, count: int = 4) -> list[str]:
        size = max(1, -(-len(text) // count))
        return [text[i : i + size] for i in range(0, len(text), size)]

    content = completion.content
    yield chunk({"role": "assistant", "content": "" if content is not None else None})
    for piece in pieces(content or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(completion.tool_calls):
        function = call["function"]
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": function["name"], "arguments": ""},
                    }
                ]
            }
        )
        for piece in pieces(function["arguments"], 3):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, completion.finish_reason)
    if include_usage:
        final = chunk({})
        final["choices"] = []
        final["usage"] = completion.usage
        yield final
    yield "[DONE]"

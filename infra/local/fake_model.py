"""An offline, OpenAI-compatible fake model server.

The test suite, the benchmarks and the local demo need "a model" that answers
instantly, costs nothing, never needs a network or a key, and behaves the same
on every run. Mocking the ``openai`` client would skip the parts that break in
practice (HTTP status handling, retries, ``Retry-After``, timeouts, streaming,
the parsing of typed responses), so this is a *real* HTTP server on loopback,
spoken to by the real ``openai`` client through ``base_url``.

What it answers, in order:

1. **Injected faults** (:class:`Fault`): an HTTP error (429, 500, 503, ...),
   optionally with ``Retry-After`` and/or a delay, for a number of requests,
   optionally only for one model or one API key. This is how retry, fallback,
   timeout and budget logic is exercised without a flaky network.
2. **Scripted replies** (:class:`Reply`), consumed first in, first out, for
   tests that need an exact answer.
3. **Deterministic defaults**: structured output that validates against the
   requested JSON schema, a tool call with generated arguments when tools are
   offered, or a short text that echoes the conversation.

Token usage is computed by a fixed rule (about four characters a token), with
prompt caching and reasoning tokens modelled the way OpenAI reports them, so
cost accounting can be tested exactly.

It never pretends to be a real model: every completion carries
``system_fingerprint == "stratus-fake-model"`` and the header
``X-Stratus-Fake-Model: true``, default text replies start with
``[fake model] ``, and a banner is logged on start.

Run it on its own (for the local cloud or the demo) with::

    python -m infra.local.fake_model --host 127.0.0.1 --port 8787

and drive it from another process through the ``/_fake/*`` admin endpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

__all__ = [
    "BANNER",
    "FAKE_HEADER",
    "FINGERPRINT",
    "MODELS",
    "TEXT_PREFIX",
    "FakeModelServer",
    "Fault",
    "RecordedRequest",
    "Reply",
    "main",
]

logger = logging.getLogger("stratus.fake_model")

FINGERPRINT = "stratus-fake-model"
"""``system_fingerprint`` of every completion, so a caller can tell it is fake."""

FAKE_HEADER = "X-Stratus-Fake-Model"
"""Header set to ``true`` on every response."""

TEXT_PREFIX = "[fake model] "
"""Start of every default text reply (and of generated string values)."""

BANNER = (
    "Stratus FAKE model server: replies are generated offline by fixed rules "
    "and are NOT from a real model."
)

MODELS: tuple[str, ...] = (
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o-mini",
    "o4-mini",
)
"""Ids listed by ``GET /v1/models``; completions accept any model id."""

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"

_MAX_BODY_BYTES = 32 * 1024 * 1024
_MAX_RECORDED = 10_000  # keeps a long-running demo from growing without bound
_MAX_CACHE_ENTRIES = 32  # earlier prompts remembered per (api key, model)
_MAX_SCHEMA_DEPTH = 8  # recursive schemas stop growing beyond this depth
_MAX_SCHEMA_NODES = 2_000  # ... or once this many values were generated (wide recursion)
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ID_TOKEN = re.compile(r"[A-Za-z]+-?\d+|\d+")
_WORD = re.compile(r"[a-z0-9]+")
_USAGE_KEYS = frozenset({"prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"})


# --------------------------------------------------------------------------- controls


class Fault(BaseModel):
    """An injected failure: the next matching requests get this answer.

    A pydantic model rather than a dataclass so the same definition validates
    faults posted as JSON to ``/_fake/faults`` from another process.
    ``status=200`` with a ``delay_s`` is a slow success: the request is held for
    the delay and then answered normally (the way to trigger client timeouts).

    ``retry_after`` sets a ``Retry-After`` header (seconds), ``times`` is how
    many matching requests it applies to (``-1``: all of them), ``model`` and
    ``api_key`` narrow it to one model or one key, and ``message`` is the
    error message. Faults apply to chat completions only, and only to requests
    that are authenticated and well formed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int = 500
    retry_after: float | None = Field(default=None, ge=0)
    delay_s: float = Field(default=0.0, ge=0)
    times: int = Field(default=1, ge=-1)
    model: str | None = None
    api_key: str | None = None
    message: str = "injected fault"

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: int) -> int:
        # Anything else (1xx, 3xx) would confuse HTTP clients rather than test them.
        if value != 200 and not 400 <= value <= 599:
            raise ValueError("status must be 200 or an HTTP error status (400-599)")
        return value

    def matches(self, model: str | None, api_key: str | None) -> bool:
        """Whether a request for ``model`` with ``api_key`` is targeted by this fault."""
        return (self.model is None or self.model == model) and (
            self.api_key is None or self.api_key == api_key
        )


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


_FAULTS = TypeAdapter(list[Fault] | Fault)
_REPLIES = TypeAdapter(list[Reply] | Reply)


@dataclass
class RecordedRequest:
    """One request the server received (admin ``/_fake/*`` calls are not recorded).

    It is recorded as soon as it arrives, with ``status=None`` until it is
    answered, so that a request still held by a delay fault (whose client may
    already have timed out) is counted straight away. A client that gave up
    during a delay fault is recorded as ``499`` (nginx's "client closed request").
    """

    method: str
    path: str
    model: str | None
    api_key: str | None
    body: Any
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form served by ``GET /_fake/requests``."""
        return {
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "api_key": self.api_key,
            "status": self.status,
            "body": self.body,
        }


class _FaultSlot:
    """A fault with its remaining uses; the :class:`Fault` itself stays immutable."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


@dataclass
class _Completion:
    """A finished answer, rendered either as one JSON body or as SSE chunks."""

    id: str
    created: int
    model: str
    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, Any]


@dataclass(frozen=True)
class _Segment:
    """One cacheable piece of a prompt (the tool list or one message)."""

    key: str
    tokens: int
    role: str | None = None
    text: str | None = None


# --------------------------------------------------------------------------- text helpers


def _tokens(text: str) -> int:
    """The server's token rule: one token per started group of four characters."""
    return -(-len(text) // 4)


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text of its content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts)
    return json.dumps(content, sort_keys=True)


def _message_text(message: dict[str, Any]) -> str:
    """Everything in a message that a model would read, for token counting."""
    text = _content_text(message.get("content"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            text += str(function.get("name", "")) + str(function.get("arguments", ""))
    return text


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _best_enum(values: list[Any], text: str) -> Any:
    """Pick the enum value that best matches ``text``, deterministically.

    Each value is split on ``_`` and scores one point per part that shares a
    four-character prefix with a word of the text, so ``order_status`` wins
    for "Where is my order?". This lets routing and classification code be
    exercised end to end with plausible choices. Ties and zero scores fall
    back to ``"other"`` when offered (what a careful model would answer), else
    to the first of the best values. Non-string enums take the first value.
    """
    candidates = [value for value in values if value is not None] or list(values)
    strings = [value for value in candidates if isinstance(value, str)]
    if len(strings) != len(candidates) or not strings:
        return candidates[0] if candidates else None
    prefixes = {word[:4] for word in _WORD.findall(text.lower()) if len(word) >= 4}

    def score(value: str) -> int:
        parts = [part for part in value.lower().split("_") if len(part) >= 4]
        return sum(1 for part in parts if part[:4] in prefixes)

    scores = [score(value) for value in strings]
    best = max(scores)
    winners = [
        value for value, value_score in zip(strings, scores, strict=True) if value_score == best
    ]
    if best > 0 and len(winners) == 1:
        return winners[0]
    if "other" in strings:
        return "other"
    return winners[0]


# --------------------------------------------------------------------------- schema faker


class _SchemaFaker:
    """Builds a value that validates against a JSON schema.

    Structured output and tool arguments are where agent code breaks when a
    model answers something unexpected; generating a *valid* instance of the
    caller's own schema keeps the happy path testable offline. It covers the
    subset of JSON Schema that OpenAI strict mode and pydantic produce:
    ``$ref``/``$defs``, ``anyOf``/``oneOf``/``allOf``, ``const``, ``enum``,
    nullable type lists, numeric bounds, string length and common formats.
    """

    def __init__(self, root: Any, user_text: str, *, tool_arguments: bool) -> None:
        self.root = root
        self.user_text = user_text
        self.tool_arguments = tool_arguments
        self._nodes = 0

    def generate(self) -> Any:
        return self.value(self.root, None, 0)

    def value(self, schema: Any, name: str | None, depth: int) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_SCHEMA_NODES:
            depth = max(depth, _MAX_SCHEMA_DEPTH)  # only what is required from here on
        if schema is True or not isinstance(schema, dict):
            return self._string({}, name)
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return _best_enum(schema["enum"], self.user_text)
        for keyword in ("anyOf", "oneOf"):
            options = schema.get(keyword)
            if isinstance(options, list) and options:
                return self.value(self._pick_option(options, depth), name, depth + 1)
        kind = self._type(schema, depth)
        if kind == "null":
            return None
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return True
        return self._string(schema, name)

    def _resolve(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Follow ``$ref`` and merge ``allOf`` so the rest sees one plain schema."""
        for _ in range(_MAX_SCHEMA_DEPTH * 4):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            schema = {**self._lookup(ref), **siblings}
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if not isinstance(part, dict):
                    continue
                part = self._resolve(part, depth)
                properties = {**part.get("properties", {}), **merged.get("properties", {})}
                required = list(
                    dict.fromkeys([*part.get("required", []), *merged.get("required", [])])
                )
                merged = {**part, **merged}
                if properties:
                    merged["properties"] = properties
                if required:
                    merged["required"] = required
            schema = merged
        return schema

    def _lookup(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            return {}  # remote references cannot be resolved offline
        node: Any = self.root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return {}
        return node if isinstance(node, dict) else {}

    @staticmethod
    def _is_null(option: Any) -> bool:
        return isinstance(option, dict) and option.get("type") == "null"

    def _pick_option(self, options: list[Any], depth: int) -> Any:
        # Deep inside a recursive schema, choosing null is what ends the recursion.
        if depth >= _MAX_SCHEMA_DEPTH and any(self._is_null(o) for o in options):
            return {"type": "null"}
        for option in options:
            if not self._is_null(option):
                return option
        return options[0]

    def _type(self, schema: dict[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            if depth >= _MAX_SCHEMA_DEPTH and "null" in kind:
                return "null"
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = kinds[0]
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        out: dict[str, Any] = {}
        for prop, prop_schema in properties.items():
            if depth >= _MAX_SCHEMA_DEPTH and prop not in required:
                continue
            out[prop] = self.value(prop_schema, prop, depth + 1)
        for prop in required:
            if prop not in out:
                out[prop] = self._string({}, prop)
        return out

    def _array(self, schema: dict[str, Any], name: str | None, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [self.value(item, name, depth + 1) for item in prefix]
        items = schema.get("items", {})
        min_items = int(schema.get("minItems", 0))
        count = max(1, min_items)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        if depth >= _MAX_SCHEMA_DEPTH or items is False:
            count = min_items if items is not False else 0
        return [self.value(items, name, depth + 1) for _ in range(count)]

    @staticmethod
    def _bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
        """Lower bound, whether exclusive, upper bound, whether exclusive."""
        low, low_excl, high, high_excl = schema.get("minimum"), False, schema.get("maximum"), False
        excl_min, excl_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        # Draft 4 spelled these as booleans; only the numeric (current) form counts.
        if _is_number(excl_min) and (low is None or excl_min >= low):
            low, low_excl = excl_min, True
        if _is_number(excl_max) and (high is None or excl_max <= high):
            high, high_excl = excl_max, True
        return low, low_excl, high, high_excl

    def _integer(self, schema: dict[str, Any]) -> int:
        low, low_excl, high, high_excl = self._bounds(schema)
        value = 1
        if low is not None:
            lowest = math.floor(low) + 1 if low_excl else math.ceil(low)
            value = max(value, lowest)
        if high is not None:
            highest = math.ceil(high) - 1 if high_excl else math.floor(high)
            value = min(value, highest)
        return value

    def _number(self, schema: dict[str, Any]) -> float:
        low, low_excl, high, high_excl = self._bounds(schema)
        value = 0.5
        too_low = low is not None and (value <= low if low_excl else value < low)
        too_high = high is not None and (value >= high if high_excl else value > high)
        if (too_low or too_high) and low is not None and high is not None:
            return (low + high) / 2
        if too_low and low is not None:
            return low + 0.5 if low_excl else float(low)
        if too_high and high is not None:
            return high - 0.5 if high_excl else float(high)
        return value

    def _string(self, schema: dict[str, Any], name: str | None) -> str:
        fmt = schema.get("format")
        formatted = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "time": "00:00:00Z",
            "email": "fake@example.com",
            "uri": "https://example.com/fake",
            "url": "https://example.com/fake",
            "uuid": "00000000-0000-4000-8000-000000000000",
            "ipv4": "127.0.0.1",
            "ipv6": "::1",
            "hostname": "example.com",
        }
        if isinstance(fmt, str) and fmt in formatted:
            return formatted[fmt]
        if self.tool_arguments and name is not None and name.lower().endswith("id"):
            # Agents look records up by the id the user mentioned ("order A-1001").
            match = _ID_TOKEN.search(self.user_text)
            text = match.group(0) if match else "unknown"
        else:
            snippet = _truncate(self.user_text, 60) or "(no user message)"
            text = TEXT_PREFIX + snippet
        max_length = schema.get("maxLength")
        if isinstance(max_length, int):
            text = text[:max_length]
        min_length = schema.get("minLength")
        if isinstance(min_length, int) and len(text) < min_length:
            text = text + "." * (min_length - len(text))
        return text


# --------------------------------------------------------------------------- request parsing


class _BadRequest(Exception):
    """A 400 answer in OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def _validate_chat_body(body: Any) -> dict[str, Any]:
    """Check the request just enough to reject what OpenAI would reject with 400."""
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array of messages.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise _BadRequest(
                f"Invalid message at index {index}: it needs a 'role' among {sorted(_ROLES)}.",
                f"messages[{index}]",
            )
    for param in ("max_completion_tokens", "max_tokens"):
        limit = body.get(param)
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise _BadRequest(f"'{param}' must be an integer >= 1.", param)
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)
    ):
        raise _BadRequest("'tools' must be an array of tool objects.", "tools")
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict):
            raise _BadRequest("'response_format' must be an object.", "response_format")
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise _BadRequest(
                    "'response_format.json_schema.schema' must be an object.",
                    "response_format.json_schema",
                )
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise _BadRequest("'stream' must be a boolean.", "stream")
    return body


def _function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools") or []
    return [
        tool["function"]
        for tool in tools
        if tool.get("type", "function") == "function" and isinstance(tool.get("function"), dict)
    ]


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool to call by default, or None when no tool call is due.

    A tool is called when tools are offered and the conversation does not end
    with a tool result (after a result the agent expects an answer, otherwise
    an agent loop would never end). ``tool_choice="none"`` disables tools, a
    named ``tool_choice`` picks that tool, anything else the first tool.
    """
    functions = _function_tools(body)
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


def _text_reply(messages: list[dict[str, Any]], user_text: str) -> str:
    """The default answer: says it is fake, echoes the question and any tool result."""
    snippet = _truncate(user_text, 80)
    if snippet:
        text = f'{TEXT_PREFIX}This is an offline reply to "{snippet}".'
    else:
        text = f"{TEXT_PREFIX}This is an offline reply (there is no user message)."
    last = messages[-1]
    if last.get("role") == "tool":
        result = _truncate(_content_text(last.get("content")), 200)
        text += f' The tool returned: "{result}".'
    return text


def _prompt_segments(messages: list[dict[str, Any]], tools: list[Any]) -> list[_Segment]:
    """The prompt as cacheable pieces, in the order a provider would cache them.

    Tool definitions come first (OpenAI puts them ahead of the messages), then
    one piece per message. Their token counts add up to ``prompt_tokens``:
    the compact JSON of ``tools``, plus per message 4 tokens of overhead and
    its text (content, and the name and arguments of any tool calls).
    """
    segments = []
    if tools:
        text = _canonical(tools)
        segments.append(_Segment(key="tools:" + text, tokens=_tokens(text)))
    for message in messages:
        text = _message_text(message)
        segments.append(
            _Segment(
                key=_canonical(message),
                tokens=4 + _tokens(text),
                role=str(message.get("role")),
                text=text,
            )
        )
    return segments


def _common_prefix_tokens(current: list[_Segment], earlier: list[_Segment]) -> int:
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


# --------------------------------------------------------------------------- HTTP layer


class _HTTPServer(ThreadingHTTPServer):
    """The stdlib server plus bookkeeping so :meth:`FakeModelServer.stop` is clean.

    Keep-alive connections (the ``openai`` client pools them) would otherwise
    keep handler threads blocked on reads after shutdown; the server tracks
    open connections and their threads so ``stop`` can close and join them.
    """

    daemon_threads = True
    block_on_close = False  # we join our own threads, with a timeout

    def __init__(self, address: tuple[str, int], fake: FakeModelServer) -> None:
        self.fake = fake
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host name (getfqdn), which can
        # stall for seconds in a sandbox without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: socket.socket) -> None:
        with self._conn_lock:
            self._connections[connection] = threading.current_thread()

    def untrack(self, connection: socket.socket) -> None:
        with self._conn_lock:
            self._connections.pop(connection, None)

    def close_connections(self, timeout: float) -> None:
        with self._conn_lock:
            open_now = list(self._connections.items())
        for connection, _ in open_now:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_now:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, stop()) are routine here, not errors.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            logger.debug("connection from %s ended: %s", client_address, error)
        else:
            logger.exception("fake model server: unhandled error for %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into calls on the owning :class:`FakeModelServer`."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server_version = "StratusFakeModel/1.0"
    timeout = 120  # idle keep-alive connections eventually free their thread

    @property
    def _http(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    @property
    def fake(self) -> FakeModelServer:
        return self._http.fake

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and delayed ACKs add ~40 ms to every loopback request.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._http.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._http.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # FakeModelServer logs one richer line per request instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            try:
                # Always read the whole body first so a keep-alive connection
                # stays in step whatever the answer is.
                raw = self.read_body()
            except _BadRequest as error:
                self.close_connection = True
                self.send_error_json(error.status, error.message)
                return
            self.fake._handle(self, method, urlsplit(self.path).path, raw)
        except OSError as error:
            # The client went away (e.g. it timed out during a delay fault).
            logger.debug("client %s disconnected: %s", self.client_address, error)
            self.close_connection = True

    # -- reading

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequest("Invalid Content-Length header.") from None
        if size < 0:
            raise _BadRequest("Invalid Content-Length header.")
        if size > _MAX_BODY_BYTES:
            raise _BadRequest("The request body is too large.", status=413)
        return self.rfile.read(size)

    def api_key(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, key = header.partition(" ")
        key = key.strip()
        return key if scheme.lower() == "bearer" and key else None

    def client_gone(self) -> bool:
        """Whether the client has closed the connection (checked after a delay)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- writing

    def _common_headers(self, extra: dict[str, str] | None) -> None:
        self.send_header(FAKE_HEADER, "true")
        for name, value in (extra or {}).items():
            self.send_header(name, value)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(headers)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_error_json(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if error_type is None:
            error_type = "server_error" if status >= 500 else "invalid_request_error"
        error = {"message": message, "type": error_type, "param": param, "code": code}
        self.send_json(status, {"error": error}, headers)

    def send_stream(self, events: Iterable[Any], headers: dict[str, str] | None = None) -> None:
        """Server-sent events in chunked encoding, so the connection stays reusable."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers(headers)
        self.end_headers()
        for event in events:
            line = "data: " + (event if isinstance(event, str) else json.dumps(event)) + "\n\n"
            data = line.encode("utf-8")
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# --------------------------------------------------------------------------- the server


class FakeModelServer:
    """An OpenAI-compatible chat completions server that answers offline.

    Use it as a context manager (or ``start()``/``stop()``) and point the
    ``openai`` client at :attr:`url`::

        with FakeModelServer() as server:
            client = openai.OpenAI(api_key="test", base_url=server.url)
            client.chat.completions.create(model="gpt-5-mini", messages=[...])

    Shared state (faults, scripted replies, recorded requests, the prompt
    cache) is guarded by one lock because requests run on their own threads.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = False) -> None:
        self.host = host
        self._requested_port = port
        self.quiet = quiet
        self._lock = threading.Lock()
        self._faults: list[_FaultSlot] = []
        self._replies: deque[Reply] = deque()
        self._recorded: deque[RecordedRequest] = deque(maxlen=_MAX_RECORDED)
        self._cache: dict[tuple[str, str], deque[list[_Segment]]] = {}
        self._completion_seq = 0
        self._tool_call_seq = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle

    def start(self) -> FakeModelServer:
        """Bind and serve on a daemon thread; ``port=0`` picks a free port."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self._requested_port), self)
        self._httpd = httpd
        # A short poll interval keeps stop() fast (shutdown waits for one poll).
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-model-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.log(
            logging.DEBUG if self.quiet else logging.WARNING, "%s Listening on %s", BANNER, self.url
        )
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and open connections; safe to call twice."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes requests held by delay faults
        httpd.shutdown()
        httpd.close_connections(timeout=5.0)
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        self._httpd = None
        self._thread = None
        logger.debug("fake model server on %s:%s stopped", self.host, httpd.server_address[1])

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the requested one before ``start`` if it was not 0)."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        if self._requested_port:
            return self._requested_port
        raise RuntimeError("the fake model server is not started (port 0 is chosen on start)")

    @property
    def url(self) -> str:
        """The ``base_url`` for the ``openai`` client, e.g. ``http://127.0.0.1:8787/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # -- controls

    def inject(self, *faults: Fault) -> None:
        """Add faults; each request takes the first matching one that is not used up."""
        with self._lock:
            self._faults.extend(_FaultSlot(fault) for fault in faults)

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order before the default behaviour."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forget faults, scripted replies, recorded requests and the prompt cache."""
        with self._lock:
            self._faults.clear()
            self._replies.clear()
            self._recorded.clear()
            self._cache.clear()
            self._completion_seq = 0
            self._tool_call_seq = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, oldest first."""
        with self._lock:
            return [replace(request) for request in self._recorded]

    def call_count(
        self,
        *,
        model: str | None = None,
        api_key: str | None = None,
        path: str = CHAT_PATH,
    ) -> int:
        """Requests that reached ``path`` (faulted and rejected ones included)."""
        with self._lock:
            return sum(
                1
                for request in self._recorded
                if request.path == path
                and (model is None or request.model == model)
                and (api_key is None or request.api_key == api_key)
            )

    # -- request handling (called on handler threads)

    def _record(self, request: RecordedRequest) -> RecordedRequest:
        with self._lock:
            self._recorded.append(request)
        return request

    def _settle(self, request: RecordedRequest, status: int) -> int:
        """Record the status *before* the answer goes out.

        A client may look at ``requests`` as soon as it has its response, so the
        status must already be there by then.
        """
        with self._lock:
            request.status = status
        return status

    @staticmethod
    def _log_request(request: RecordedRequest) -> None:
        key = request.api_key
        masked = None if key is None else ("..." + key[-4:] if len(key) > 8 else "***")
        logger.debug(
            "%s %s model=%s key=%s -> %s",
            request.method,
            request.path,
            request.model,
            masked,
            request.status,
        )

    def _take_fault(self, model: str | None, api_key: str | None) -> Fault | None:
        with self._lock:
            for slot in self._faults:
                if slot.remaining != 0 and slot.fault.matches(model, api_key):
                    if slot.remaining > 0:
                        slot.remaining -= 1
                    return slot.fault
            return None

    def _take_reply(self) -> Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def _handle(self, http: _Handler, method: str, path: str, raw: bytes) -> None:
        if path.startswith("/_fake/"):
            self._handle_admin(http, method, path, raw)
            return
        if path == CHAT_PATH and method == "POST":
            self._handle_chat(http, raw)
            return
        record = self._record(RecordedRequest(method, path, None, http.api_key(), None))
        try:
            if path == MODELS_PATH and method == "GET":
                if record.api_key is None:
                    self._settle(record, 401)
                    self._send_unauthorized(http)
                    return
                data = [
                    {
                        "id": model,
                        "object": "model",
                        "created": 1_700_000_000,
                        "owned_by": "stratus-fake",
                    }
                    for model in MODELS
                ]
                http.send_json(self._settle(record, 200), {"object": "list", "data": data})
            elif path in (CHAT_PATH, MODELS_PATH):
                self._settle(record, 405)
                http.send_error_json(405, f"Method {method} is not allowed on {path}.")
            else:
                self._settle(record, 404)
                http.send_error_json(404, f"Invalid URL ({method} {path})", code="unknown_url")
        finally:
            self._log_request(record)

    @staticmethod
    def _send_unauthorized(http: _Handler) -> None:
        http.send_error_json(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )

    def _handle_chat(self, http: _Handler, raw: bytes) -> None:
        api_key = http.api_key()
        body: Any = None
        problem: _BadRequest | None = None
        try:
            body = json.loads(raw) if raw.strip() else None
            if body is None:
                problem = _BadRequest("We could not parse the JSON body of your request: empty.")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problem = _BadRequest(f"We could not parse the JSON body of your request: {error}.")
        model = body.get("model") if isinstance(body, dict) else None
        record = self._record(
            RecordedRequest(
                "POST", CHAT_PATH, model if isinstance(model, str) else None, api_key, body
            )
        )
        try:
            if api_key is None:
                self._settle(record, 401)
                self._send_unauthorized(http)
                return
            if problem is None:
                try:
                    body = _validate_chat_body(body)
                except _BadRequest as error:
                    problem = error
            if problem is not None:
                self._settle(record, 400)
                http.send_error_json(400, problem.message, param=problem.param)
                return
            # Validation comes before faults so a malformed request never uses one up.
            fault = self._take_fault(record.model, api_key)
            if fault is not None:
                if fault.delay_s:
                    self._stopping.wait(fault.delay_s)
                    if http.client_gone():
                        # Like nginx's 499: the client timed out and left. Answering
                        # anyway would use up a scripted reply meant for a later call.
                        self._settle(record, 499)
                        http.close_connection = True
                        return
                if fault.status != 200:
                    self._settle(record, fault.status)
                    self._send_fault(http, fault)
                    return
            completion = self._complete(body, api_key, self._take_reply())
            headers = {"x-request-id": "req_" + completion.id.removeprefix("chatcmpl-")}
            self._settle(record, 200)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                http.send_stream(self._chunks(completion, include_usage), headers)
            else:
                http.send_json(200, self._completion_json(completion), headers)
        except OSError:
            raise  # the client hung up; nothing left to answer
        except Exception:
            # A bug here must surface as a 500 in the tests, not as a dropped connection.
            logger.exception("fake model server failed to answer a chat completion")
            if record.status is None:
                self._settle(record, 500)
                http.send_error_json(500, "The fake model server failed (see its log).")
            else:
                http.close_connection = True  # a response was already under way
        finally:
            if record.status is None:
                self._settle(record, 500)
            self._log_request(record)

    @staticmethod
    def _send_fault(http: _Handler, fault: Fault) -> None:
        headers = {}
        if fault.retry_after is not None:
            seconds = fault.retry_after
            headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        error_type, code = {
            429: ("requests", "rate_limit_exceeded"),
            401: ("invalid_request_error", "invalid_api_key"),
        }.get(fault.status, (None, None))
        http.send_error_json(
            fault.status, fault.message, error_type=error_type, code=code, headers=headers
        )

    def _handle_admin(self, http: _Handler, method: str, path: str, raw: bytes) -> None:
        """``/_fake/*``: the Python controls, for a server in another process."""
        routes = {
            "/_fake/faults": "POST",
            "/_fake/replies": "POST",
            "/_fake/reset": "POST",
            "/_fake/requests": "GET",
            "/_fake/health": "GET",
        }
        if path not in routes:
            http.send_error_json(404, f"Invalid URL ({method} {path})", code="unknown_url")
            return
        if routes[path] != method:
            http.send_error_json(405, f"Use {routes[path]} for {path}.")
            return
        if path == "/_fake/health":
            http.send_json(
                200, {"status": "ok", "fake_model": True, "banner": BANNER, "url": self.url}
            )
        elif path == "/_fake/requests":
            http.send_json(200, [request.to_json() for request in self.requests])
        elif path == "/_fake/reset":
            self.reset()
            http.send_json(200, {"ok": True})
        else:
            try:
                data = json.loads(raw) if raw.strip() else None
                if path == "/_fake/faults":
                    parsed_faults = _FAULTS.validate_python(data)
                    faults = parsed_faults if isinstance(parsed_faults, list) else [parsed_faults]
                    self.inject(*faults)
                    count = len(faults)
                else:
                    parsed_replies = _REPLIES.validate_python(data)
                    replies = (
                        parsed_replies if isinstance(parsed_replies, list) else [parsed_replies]
                    )
                    self.script(*replies)
                    count = len(replies)
            except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as error:
                http.send_error_json(400, str(error))
                return
            http.send_json(200, {"ok": True, "count": count})

    # -- answers

    def _complete(self, body: dict[str, Any], api_key: str, reply: Reply | None) -> _Completion:
        """Build the answer and its usage; all numbers follow fixed rules."""
        model: str = body["model"]
        messages: list[dict[str, Any]] = body["messages"]
        user_text = _last_user_text(messages)

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
            content, calls = self._default_answer(body, messages, user_text)

        segments = _prompt_segments(messages, body.get("tools") or [])
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
            if content is not None and _tokens(content) > budget:
                content, truncated = content[: budget * 4], True
            budget -= _tokens(content or "")
            fitted = []
            for call_id, name, arguments in calls:
                if _tokens(arguments) > budget:
                    arguments, truncated = arguments[: budget * 4], True
                budget -= _tokens(arguments)
                fitted.append((call_id, name, arguments))
            calls = fitted
        visible = _tokens(content or "") + sum(_tokens(arguments) for _, _, arguments in calls)

        with self._lock:
            cached = self._cached_tokens(api_key, model, segments, prompt_tokens)
            self._completion_seq += 1
            completion_id = f"chatcmpl-fake{self._completion_seq:06d}"
            tool_calls = []
            for call_id, name, arguments in calls:
                if call_id is None:
                    self._tool_call_seq += 1
                    call_id = f"call_{self._tool_call_seq}"
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
        return _Completion(
            id=completion_id,
            created=int(time.time()),
            model=model,
            content=content,
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            usage=usage,
        )

    @staticmethod
    def _default_answer(
        body: dict[str, Any], messages: list[dict[str, Any]], user_text: str
    ) -> tuple[str | None, list[tuple[str | None, str, str]]]:
        """Structured output, else a tool call, else text (see the module docstring)."""
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format["json_schema"]["schema"]
            value = _SchemaFaker(schema, user_text, tool_arguments=False).generate()
            return json.dumps(value), []
        tool = _chosen_tool(body)
        if tool is not None:
            parameters = tool.get("parameters") or {"type": "object", "properties": {}}
            arguments = _SchemaFaker(parameters, user_text, tool_arguments=True).generate()
            return None, [(None, str(tool.get("name", "tool")), json.dumps(arguments))]
        text = _text_reply(messages, user_text)
        if response_format.get("type") == "json_object":
            text = json.dumps({"answer": text})
        return text, []

    def _cached_tokens(
        self, api_key: str, model: str, segments: list[_Segment], prompt_tokens: int
    ) -> int:
        """Prompt-cache hits as OpenAI reports them; call with the lock held.

        Caching applies from 1024 prompt tokens, in steps of 128, to the longest
        prefix shared with an earlier prompt of the same key and model. The
        prompt is then remembered for later requests.
        """
        history = self._cache.setdefault((api_key, model), deque(maxlen=_MAX_CACHE_ENTRIES))
        cached = 0
        if prompt_tokens >= 1024:
            shared = max((_common_prefix_tokens(segments, old) for old in history), default=0)
            cached = min(shared, prompt_tokens) // 128 * 128
            if cached < 1024:
                cached = 0
        history.append(segments)
        return cached

    @staticmethod
    def _completion_json(completion: _Completion) -> dict[str, Any]:
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

    @staticmethod
    def _chunks(completion: _Completion, include_usage: bool) -> Iterator[Any]:
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


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.fake_model",
        description="Offline OpenAI-compatible fake model server (not a real model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--log-level", default="WARNING", help="e.g. DEBUG to log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = FakeModelServer(args.host, args.port, quiet=True).start()
    print(BANNER, file=sys.stderr, flush=True)
    print(
        f"Fake model server listening; use base_url={server.url} (Ctrl-C to stop)", file=sys.stderr
    )
    print(server.url, flush=True)  # alone on stdout, for a parent process to read
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

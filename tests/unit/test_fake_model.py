"""The offline fake model server, exercised through the real ``openai`` client over HTTP.

The server stands in for OpenAI in the rest of the suite, the benchmarks and
the demo, so these tests pin the behaviour other code relies on: the response
shapes the client parses, the deterministic usage numbers, the fault injection
that drives retry and timeout logic, and the admin endpoints.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel, Field

from infra.local.fake_model import (
    BANNER,
    FINGERPRINT,
    TEXT_PREFIX,
    FakeModelServer,
    Fault,
    Reply,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-key"
USER = [{"role": "user", "content": "hello there"}]


def tokens(text: str) -> int:
    """The server's documented rule: one token per started four characters."""
    return math.ceil(len(text) / 4)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer(quiet=True) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: FakeModelServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
def client(server: FakeModelServer) -> Iterator[openai.OpenAI]:
    # No retries: every request a test makes reaches the server exactly once.
    with openai.OpenAI(api_key=KEY, base_url=server.url, max_retries=0, timeout=5.0) as shared:
        yield shared


@pytest.fixture
def make_client(server: FakeModelServer) -> Iterator[Callable[..., openai.OpenAI]]:
    """Extra clients (other keys, other options), closed after the test."""
    made: list[openai.OpenAI] = []

    def make(api_key: str = KEY, base_url: str | None = None, **options: Any) -> openai.OpenAI:
        options = {"max_retries": 0, "timeout": 5.0, **options}
        made.append(openai.OpenAI(api_key=api_key, base_url=base_url or server.url, **options))
        return made[-1]

    yield make
    for extra in made:
        extra.close()


def admin(server: FakeModelServer, path: str, payload: Any = None) -> tuple[int, Any]:
    """Call a ``/_fake/*`` endpoint the way another process would."""
    url = server.url.removesuffix("/v1") + path
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def raw_post(
    server: FakeModelServer, path: str, body: bytes, key: str | None = KEY
) -> tuple[int, Any]:
    request = urllib.request.Request(server.url.removesuffix("/v1") + path, data=body)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --------------------------------------------------------------------------- plain replies


def test_plain_reply_says_it_is_fake(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4.1-mini", messages=USER)
    completion = raw.parse()

    assert raw.headers["x-stratus-fake-model"] == "true"
    assert completion.system_fingerprint == FINGERPRINT
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4.1-mini"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.tool_calls is None
    assert choice.message.content is not None
    assert choice.message.content.startswith(TEXT_PREFIX)
    assert "hello there" in choice.message.content


def test_reply_is_deterministic(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    second = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert "gpt-5-mini" in ids
    assert "gpt-4.1-mini" in ids


def test_banner_is_logged_on_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stratus.fake_model"), FakeModelServer() as other:
        url = other.url
    assert any(
        BANNER in record.getMessage() and url in record.getMessage() for record in caplog.records
    )
    assert "NOT from a real model" in BANNER


# --------------------------------------------------------------------------- usage


def test_usage_follows_the_token_rule(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": "hello there"},
    ]
    completion = client.chat.completions.create(model="gpt-4.1-mini", messages=messages)

    usage = completion.usage
    assert usage is not None
    content = completion.choices[0].message.content or ""
    expected_prompt = sum(4 + tokens(m["content"]) for m in messages)
    assert usage.prompt_tokens == expected_prompt == 17
    assert usage.completion_tokens == tokens(content)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_tool_definitions_count_as_prompt_tokens(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    with_tools = client.chat.completions.create(model="gpt-4.1-mini", messages=USER, tools=TOOLS)
    assert plain.usage is not None and with_tools.usage is not None
    tools_json = json.dumps(TOOLS, sort_keys=True, separators=(",", ":"))
    assert with_tools.usage.prompt_tokens == plain.usage.prompt_tokens + tokens(tools_json)


def test_repeated_long_prompt_reports_cached_tokens(
    client: openai.OpenAI, server: FakeModelServer, make_client: Callable[..., openai.OpenAI]
) -> None:
    long = [{"role": "user", "content": "x" * 4800}]  # 4 + 1200 = 1204 prompt tokens

    first = client.chat.completions.create(model="gpt-4.1-mini", messages=long)
    second = client.chat.completions.create(model="gpt-4.1-mini", messages=long)
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == 1204
    assert first.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 1152  # 1204 rounded down to 128s

    # A longer conversation with the same start reuses that prefix.
    longer = [*long, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    third = client.chat.completions.create(model="gpt-4.1-mini", messages=longer)
    assert third.usage is not None and third.usage.prompt_tokens_details is not None
    assert third.usage.prompt_tokens_details.cached_tokens == 1152

    # The cache is per API key and per model, and reset() forgets it.
    other_key = make_client("sk-other")
    for response in (
        other_key.chat.completions.create(model="gpt-4.1-mini", messages=long),
        client.chat.completions.create(model="gpt-4o-mini", messages=long),
    ):
        assert response.usage is not None and response.usage.prompt_tokens_details is not None
        assert response.usage.prompt_tokens_details.cached_tokens == 0
    server.reset()
    after_reset = client.chat.completions.create(model="gpt-4.1-mini", messages=long)
    assert after_reset.usage is not None and after_reset.usage.prompt_tokens_details is not None
    assert after_reset.usage.prompt_tokens_details.cached_tokens == 0


def test_short_prompts_are_never_cached(client: openai.OpenAI) -> None:
    short = [{"role": "user", "content": "y" * 4000}]  # 1004 tokens, under the 1024 minimum
    client.chat.completions.create(model="gpt-4.1-mini", messages=short)
    again = client.chat.completions.create(model="gpt-4.1-mini", messages=short)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens == 1004
    assert again.usage.prompt_tokens_details.cached_tokens == 0


@pytest.mark.parametrize("model", ["gpt-5-mini", "o4-mini"])
def test_reasoning_models_report_reasoning_inside_completion_tokens(
    client: openai.OpenAI, model: str
) -> None:
    completion = client.chat.completions.create(model=model, messages=USER)
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    content = completion.choices[0].message.content or ""
    assert usage.prompt_tokens == 4 + tokens("hello there") == 7
    reasoning = 8 + usage.prompt_tokens % 32
    assert usage.completion_tokens_details.reasoning_tokens == reasoning == 15
    assert usage.completion_tokens == tokens(content) + reasoning


def test_max_completion_tokens_truncates_with_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4.1-mini", messages=USER, max_completion_tokens=5
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content == (TEXT_PREFIX + "This is")[:20]
    assert completion.usage is not None and completion.usage.completion_tokens == 5

    # Reasoning uses the budget first, as with OpenAI's reasoning models.
    reasoning = client.chat.completions.create(model="gpt-5-mini", messages=USER, max_tokens=10)
    assert reasoning.choices[0].finish_reason == "length"
    assert reasoning.choices[0].message.content == ""
    assert reasoning.usage is not None and reasoning.usage.completion_tokens == 10
    assert reasoning.usage.completion_tokens_details is not None
    assert reasoning.usage.completion_tokens_details.reasoning_tokens == 10


# --------------------------------------------------------------------------- structured output

Intent = Literal["order_status", "return_request", "billing", "tech_support", "other"]


class Address(BaseModel):
    city: str
    postcode: str | None


class Triage(BaseModel):
    intent: Intent
    summary: str = Field(max_length=40)
    priority: int = Field(ge=3, le=5)
    confidence: float
    urgent: bool
    tags: list[str]
    address: Address
    kind: Literal["triage"]
    due: datetime


@pytest.mark.parametrize(
    ("message", "intent"),
    [
        ("Where is my order #A-1001?", "order_status"),
        ("I want to return my shoes", "return_request"),
        ("I was billed twice", "billing"),
        ("hello", "other"),
    ],
)
def test_structured_output_validates_and_routes_enums(
    client: openai.OpenAI, message: str, intent: str
) -> None:
    completion = client.chat.completions.parse(
        model="gpt-5-mini",
        messages=[{"role": "system", "content": "Classify."}, {"role": "user", "content": message}],
        response_format=Triage,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Triage)
    assert parsed.intent == intent
    assert parsed.summary.startswith(TEXT_PREFIX)
    assert parsed.priority == 3 and parsed.confidence == 0.5 and parsed.urgent is True
    assert len(parsed.tags) == 1
    assert parsed.kind == "triage"
    assert completion.choices[0].finish_reason == "stop"


def test_json_schema_features_are_honoured(client: openai.OpenAI) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "minLength": 3},
                    "qty": {"type": "integer", "exclusiveMinimum": 4},
                },
                "required": ["sku", "qty"],
                "additionalProperties": False,
            }
        },
        "properties": {
            "version": {"const": 2},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 2},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "ratio": {"type": "number", "minimum": 2, "maximum": 3},
            "flags": {"type": ["null", "boolean"]},
            "status": {"enum": ["open", "closed"]},
        },
        "required": ["version", "items", "note", "ratio", "flags", "status"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": "anything"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "things", "strict": True, "schema": schema},
        },
    )
    value = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(value, schema)
    assert value["version"] == 2
    assert len(value["items"]) == 2 and value["items"][0]["qty"] == 5
    assert value["note"].startswith(TEXT_PREFIX)
    assert value["status"] == "open"  # no match and no "other": the first value


class Node(BaseModel):
    name: str
    children: list[Node]
    parent: Node | None


def test_recursive_schema_terminates(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "node", "schema": Node.model_json_schema()},
        },
    )
    node = Node.model_validate_json(completion.choices[0].message.content or "")
    assert node.children and node.parent is not None


# --------------------------------------------------------------------------- tool calls

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look an order up.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "include_items": {"type": "boolean"},
                },
                "required": ["order_id", "include_items"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund",
            "parameters": {
                "type": "object",
                "properties": {"amount": {"type": "number"}},
                "required": ["amount"],
            },
        },
    },
]


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Where is my order #A-1001?"}]
    first = client.chat.completions.create(model="gpt-4.1-mini", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id == "call_1"
    assert call.type == "function"
    assert call.function.name == "get_order"
    assert json.loads(call.function.arguments) == {"order_id": "A-1001", "include_items": True}
    assert first.usage is not None
    assert first.usage.completion_tokens == tokens(call.function.arguments)

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'})
    second = client.chat.completions.create(model="gpt-4.1-mini", messages=messages, tools=TOOLS)
    answer = second.choices[0]
    assert answer.finish_reason == "stop"
    assert answer.message.tool_calls is None
    assert answer.message.content is not None
    assert answer.message.content.startswith(TEXT_PREFIX)
    assert '{"status": "shipped"}' in answer.message.content
    assert "A-1001" in answer.message.content


def test_tool_result_is_quoted_truncated(client: openai.OpenAI) -> None:
    messages = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "z" * 500},
    ]
    completion = client.chat.completions.create(model="gpt-4.1-mini", messages=messages)
    content = completion.choices[0].message.content or ""
    assert "z" * 197 + "..." in content
    assert "z" * 198 not in content


def test_tool_choice_and_id_fallback(client: openai.OpenAI) -> None:
    named = client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "refund"}},
    )
    calls = named.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "refund"
    assert json.loads(calls[0].function.arguments) == {"amount": 0.5}

    no_id = client.chat.completions.create(model="gpt-4.1-mini", messages=USER, tools=TOOLS)
    calls = no_id.choices[0].message.tool_calls
    assert calls is not None and calls[0].id == "call_2"
    assert json.loads(calls[0].function.arguments)["order_id"] == "unknown"

    none = client.chat.completions.create(
        model="gpt-4.1-mini", messages=USER, tools=TOOLS, tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None


# --------------------------------------------------------------------------- streaming


def test_streaming_text_with_usage(client: openai.OpenAI) -> None:
    expected = client.chat.completions.create(model="gpt-5-mini", messages=USER)
    stream = client.chat.completions.create(
        model="gpt-5-mini",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.system_fingerprint == FINGERPRINT for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == expected.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == expected.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_streaming_tool_call_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": "Where is my order #A-1001?"}],
        tools=TOOLS,
        stream=True,
    )
    arguments, name, call_id, finish = "", None, None, None
    for chunk in stream:
        assert chunk.usage is None
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            call_id = call.id or call_id
            if call.function is not None:
                name = call.function.name or name
                arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (call_id, name, finish) == ("call_1", "get_order", "tool_calls")
    assert json.loads(arguments) == {"order_id": "A-1001", "include_items": True}


# --------------------------------------------------------------------------- errors and faults


def test_missing_key_is_401(client: openai.OpenAI, server: FakeModelServer) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(
            model="gpt-4.1-mini", messages=USER, extra_headers={"Authorization": openai.Omit()}
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.response.headers["x-stratus-fake-model"] == "true"
    assert [r.status for r in server.requests] == [401]


def test_malformed_requests_are_400_and_unknown_paths_404(server: FakeModelServer) -> None:
    status, body = raw_post(server, "/v1/chat/completions", b"{not json")
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert set(body["error"]) >= {"message", "type", "code"}

    status, body = raw_post(server, "/v1/chat/completions", json.dumps({"model": "m"}).encode())
    assert (status, body["error"]["param"]) == (400, "messages")
    status, body = raw_post(server, "/v1/chat/completions", json.dumps({"messages": USER}).encode())
    assert (status, body["error"]["param"]) == (400, "model")

    status, body = raw_post(server, "/v1/nowhere", b"{}")
    assert status == 404 and "error" in body
    assert [r.status for r in server.requests] == [400, 400, 400, 404]


def test_injected_429_surfaces_retry_after(client: openai.OpenAI, server: FakeModelServer) -> None:
    server.inject(Fault(status=429, retry_after=2, message="slow down"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    assert "slow down" in caught.value.message

    # Used up after one request.
    assert client.chat.completions.create(model="gpt-4.1-mini", messages=USER).choices
    assert [r.status for r in server.requests] == [429, 200]


def test_client_retries_honour_retry_after(
    server: FakeModelServer, make_client: Callable[..., openai.OpenAI]
) -> None:
    server.inject(Fault(status=429, retry_after=0.05))
    retrying = make_client(max_retries=1)
    completion = retrying.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert completion.choices[0].finish_reason == "stop"
    assert server.call_count() == 2


def test_fault_times_are_counted(client: openai.OpenAI, server: FakeModelServer) -> None:
    server.inject(Fault(status=500, times=2), Fault(status=503))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert caught.value.status_code == 503
    client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert [r.status for r in server.requests] == [500, 500, 503, 200]
    assert server.call_count() == 4


def test_faults_can_target_a_model_or_a_key(
    client: openai.OpenAI, server: FakeModelServer, make_client: Callable[..., openai.OpenAI]
) -> None:
    server.inject(
        Fault(status=503, model="gpt-5", times=-1),
        Fault(status=429, api_key="sk-throttled", times=-1),
    )
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-5", messages=USER)
    assert client.chat.completions.create(model="gpt-5-mini", messages=USER).choices

    throttled = make_client("sk-throttled")
    with pytest.raises(openai.RateLimitError):
        throttled.chat.completions.create(model="gpt-5-mini", messages=USER)
    assert server.call_count(model="gpt-5") == 3
    assert server.call_count(model="gpt-5-mini") == 2
    assert server.call_count(api_key="sk-throttled") == 1
    assert server.call_count(model="gpt-5-mini", api_key=KEY) == 1


def test_delay_fault_times_the_client_out(client: openai.OpenAI, server: FakeModelServer) -> None:
    server.inject(Fault(status=200, delay_s=0.4))
    impatient = client.with_options(timeout=0.15)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    # Counted at once, even though the server is still holding the request.
    assert server.call_count() == 1
    # Once the delay is over the server notices the client left and answers nothing
    # (so it cannot use up anything meant for a later request).
    deadline = time.monotonic() + 3
    while server.requests[0].status is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.requests[0].status == 499

    # A slow success within the timeout is answered normally.
    server.inject(Fault(status=200, delay_s=0.1))
    completion = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert completion.choices[0].finish_reason == "stop"


def test_fault_payloads_are_validated() -> None:
    with pytest.raises(ValueError, match="status"):
        Fault(status=302)
    with pytest.raises(ValueError, match="name"):
        Reply(tool_calls=[{"arguments": {}}])
    with pytest.raises(ValueError, match="usage"):
        Reply(usage={"tokens": 3})


# --------------------------------------------------------------------------- scripted replies


def test_scripted_replies_come_first_in_order(
    client: openai.OpenAI, server: FakeModelServer
) -> None:
    scripted_usage = {
        "prompt_tokens": 100,
        "cached_tokens": 40,
        "completion_tokens": 30,
        "reasoning_tokens": 20,
    }
    server.script(
        Reply(content="first answer"),
        Reply(
            tool_calls=[{"name": "get_order", "arguments": {"order_id": "B-7"}}],
            usage=scripted_usage,
        ),
    )

    first = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert first.choices[0].message.content == "first answer"
    assert first.choices[0].finish_reason == "stop"

    second = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    calls = second.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_order"
    assert calls[0].id == "call_1"
    assert json.loads(calls[0].function.arguments) == {"order_id": "B-7"}
    assert second.choices[0].finish_reason == "tool_calls"
    usage = second.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 30, 130)
    assert usage.prompt_tokens_details is not None and usage.completion_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 40
    assert usage.completion_tokens_details.reasoning_tokens == 20

    third = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert (third.choices[0].message.content or "").startswith(TEXT_PREFIX)


def test_faults_take_precedence_over_scripts(
    client: openai.OpenAI, server: FakeModelServer
) -> None:
    server.script(Reply(content="scripted"))
    server.inject(Fault(status=500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    completion = client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert completion.choices[0].message.content == "scripted"


# --------------------------------------------------------------------------- admin and counting


def test_admin_endpoints(client: openai.OpenAI, server: FakeModelServer) -> None:
    status, health = admin(server, "/_fake/health")
    assert status == 200 and health["status"] == "ok" and health["fake_model"] is True

    status, body = admin(server, "/_fake/faults", [{"status": 503, "model": "gpt-5"}])
    assert (status, body["count"]) == (200, 1)
    status, body = admin(server, "/_fake/faults", {"status": 429, "retry_after": 1})
    assert (status, body["count"]) == (200, 1)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-5", messages=USER)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4.1-mini", messages=USER)

    status, body = admin(server, "/_fake/replies", {"content": "from afar"})
    assert status == 200
    assert client.chat.completions.create(model="o4-mini", messages=USER).choices[
        0
    ].message.content == ("from afar")

    status, recorded = admin(server, "/_fake/requests")
    assert status == 200
    assert [(r["path"], r["model"], r["api_key"], r["status"]) for r in recorded] == [
        ("/v1/chat/completions", "gpt-5", KEY, 503),
        ("/v1/chat/completions", "gpt-4.1-mini", KEY, 429),
        ("/v1/chat/completions", "o4-mini", KEY, 200),
    ]

    status, error = admin(server, "/_fake/faults", {"status": "soon", "colour": "red"})
    assert status == 400 and "error" in error

    status, body = admin(server, "/_fake/reset", {})
    assert (status, body) == (200, {"ok": True})
    assert server.requests == []
    assert client.chat.completions.create(model="gpt-5", messages=USER).choices


def test_call_count_and_recorded_requests(client: openai.OpenAI, server: FakeModelServer) -> None:
    client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    client.chat.completions.create(model="gpt-5-mini", messages=USER, temperature=0.2)
    client.models.list()

    assert server.call_count() == 2
    assert server.call_count(model="gpt-5-mini") == 1
    assert server.call_count(api_key="sk-nobody") == 0
    assert server.call_count(path="/v1/models") == 1
    recorded = server.requests
    assert [r.path for r in recorded] == ["/v1/chat/completions"] * 2 + ["/v1/models"]
    assert recorded[1].body["temperature"] == 0.2
    assert all(r.api_key == KEY and r.status == 200 for r in recorded)


def test_concurrent_requests(
    server: FakeModelServer, make_client: Callable[..., openai.OpenAI]
) -> None:
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            local = clients[index]
            for _ in range(3):
                local.chat.completions.create(model="gpt-4.1-mini", messages=USER)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    clients = [make_client(f"sk-{index}") for index in range(8)]
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert server.call_count() == 24
    assert server.call_count(api_key="sk-3") == 3


# --------------------------------------------------------------------------- lifecycle


def test_start_stop_is_clean_and_idempotent(make_client: Callable[..., openai.OpenAI]) -> None:
    fake = FakeModelServer(quiet=True)
    with pytest.raises(RuntimeError):
        _ = fake.url
    fake.start()
    url = fake.url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    make_client(base_url=url).chat.completions.create(model="gpt-4.1-mini", messages=USER)
    fake.stop()
    fake.stop()
    with pytest.raises(openai.APIConnectionError):
        make_client(base_url=url, timeout=1).models.list()


def test_module_entry_point(make_client: Callable[..., openai.OpenAI]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local.fake_model", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        completion = make_client(base_url=url).chat.completions.create(
            model="gpt-4.1-mini", messages=USER
        )
        assert completion.system_fingerprint == FINGERPRINT
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert BANNER in stderr

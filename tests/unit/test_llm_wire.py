"""What ``stratus.llm`` puts on the wire: the messages and the response format's schema
passed as ``extra_body`` (:func:`stratus.llm.untransformed`) give the request body the
SDK builds from ``messages=`` and ``response_format=``, byte for byte, for every kind
of message the runtime sends; :func:`stratus.llm.parse_completion` parses the answer
as the SDK's ``parse`` does."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx2
import openai
import pytest
from pydantic import BaseModel, ValidationError

from stratus.llm import parse_completion, untransformed


class Decision(BaseModel):
    category: str
    confidence: float


class Lookup(BaseModel):
    order_id: str


REPLY = {
    "id": "chatcmpl-wire",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-5-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {
                "role": "assistant",
                "content": '{"category": "order_status", "confidence": 0.5}',
                "refusal": None,
            },
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}

CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "system and user": [
        {"role": "system", "content": "You triage tickets."},
        {"role": "user", "content": "Where is order A-1001? ünïcode ✓"},
    ],
    "tool call and result": [
        {"role": "system", "content": "You look orders up."},
        {"role": "user", "content": "Status of A-1001?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"order_id": "A-1001"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    ],
    "content parts and names": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {"role": "assistant", "content": "A picture.", "refusal": None},
    ],
}


def _client(sent: list[bytes], reply: dict[str, Any] = REPLY) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.content)
        return httpx2.Response(200, json=reply)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(
        api_key="sk-wire", base_url="http://wire.invalid/v1", max_retries=0, http_client=http
    )


def _both(call: dict[str, Any], reply: dict[str, Any] = REPLY) -> tuple[list[bytes], list[Any]]:
    """The SDK's own ``parse`` and ``parse_completion`` on the same call: bodies, replies."""
    sent: list[bytes] = []
    with _client(sent, reply) as client:
        direct = client.chat.completions.parse(**call, timeout=5.0)
        ours = parse_completion(client, call, timeout=5.0)
    return sent, [direct, ours]


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("response_format", [Decision, None])
def test_the_body_is_the_one_the_sdk_builds(name: str, response_format: Any) -> None:
    call: dict[str, Any] = {
        "model": "gpt-5-mini",
        "messages": CONVERSATIONS[name],
        "max_completion_tokens": 64,
        "tools": [openai.pydantic_function_tool(Lookup, name="lookup")],
    }
    if response_format is not None:
        call["response_format"] = response_format
    (direct, untransformed_body), (sdk, ours) = _both(call)
    assert untransformed_body == direct
    assert json.loads(untransformed_body)["messages"] == CONVERSATIONS[name]
    assert ours.choices[0].message.parsed == sdk.choices[0].message.parsed
    if response_format is not None:
        assert ours.choices[0].message.parsed == Decision(category="order_status", confidence=0.5)


def test_an_answer_off_the_schema_raises_as_the_sdk_does_and_a_refusal_parses_to_none() -> None:
    call = {
        "model": "gpt-5-mini",
        "messages": CONVERSATIONS["system and user"],
        "response_format": Decision,
    }
    off = copy.deepcopy(REPLY)
    off["choices"][0]["message"]["content"] = '{"category": 3}'
    sent: list[bytes] = []
    with _client(sent, off) as client:
        with pytest.raises(ValidationError):
            client.chat.completions.parse(**call, timeout=5.0)
        with pytest.raises(ValidationError):
            parse_completion(client, call, timeout=5.0)
    refused = copy.deepcopy(REPLY)
    refused["choices"][0]["message"].update(content=None, refusal="I cannot help with that.")
    _, (sdk, ours) = _both(call, refused)
    assert sdk.choices[0].message.parsed is None and ours.choices[0].message.parsed is None
    assert ours.choices[0].message.refusal == "I cannot help with that."


def test_the_caller_s_arguments_are_left_as_they_were() -> None:
    call = {
        "model": "gpt-5-mini",
        "messages": CONVERSATIONS["system and user"],
        "response_format": Decision,
    }
    sent = untransformed(call)
    assert call["messages"] is CONVERSATIONS["system and user"]
    assert call["response_format"] is Decision
    assert sent["messages"] == [] and sent["response_format"] == {}
    assert sent["extra_body"]["messages"] == call["messages"]
    assert sent["extra_body"]["response_format"]["json_schema"]["name"] == "Decision"

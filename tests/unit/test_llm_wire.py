"""What ``stratus.llm`` puts on the wire: the messages passed as ``extra_body``
(:func:`stratus.llm.untransformed_messages`) give the request body the SDK builds
from ``messages=``, byte for byte, for every kind of message the runtime sends."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from pydantic import BaseModel

from stratus.llm import untransformed_messages


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


def _bodies(**call: Any) -> list[bytes]:
    sent: list[bytes] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.content)
        return httpx2.Response(200, json=REPLY)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    with openai.OpenAI(
        api_key="sk-wire", base_url="http://wire.invalid/v1", max_retries=0, http_client=http
    ) as client:
        client.chat.completions.parse(**call, timeout=5.0)
        client.chat.completions.parse(**untransformed_messages(call), timeout=5.0)
    return sent


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_the_body_is_the_one_the_sdk_builds_from_messages(name: str) -> None:
    call = {
        "model": "gpt-5-mini",
        "messages": CONVERSATIONS[name],
        "max_completion_tokens": 64,
        "response_format": Decision,
        "tools": [openai.pydantic_function_tool(Lookup, name="lookup")],
    }
    direct, untransformed = _bodies(**call)
    assert untransformed == direct
    assert json.loads(untransformed)["messages"] == CONVERSATIONS[name]


def test_the_caller_s_arguments_are_left_as_they_were() -> None:
    call = {"model": "gpt-5-mini", "messages": CONVERSATIONS["system and user"]}
    sent = untransformed_messages(call)
    assert call["messages"] is CONVERSATIONS["system and user"]
    assert sent["messages"] == [] and sent["extra_body"] == {"messages": call["messages"]}

"""The public HTTP contracts (request and response bodies) of the Stratus API.

These models drive request validation in the handlers, the OpenAPI document
served at ``/v1/openapi.json``, and the API Gateway request models in the CDK
stack, so the three can never disagree.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratus.usage import Usage

JsonObject = dict[str, Any]
#: Longest accepted ``Idempotency-Key`` header.
MAX_IDEMPOTENCY_KEY_LEN = 256
#: Deepest nesting of arrays and objects accepted in a request body (``invalid_json`` past it).
MAX_JSON_DEPTH = 64

_JSON_TOKEN = re.compile(r'[\[\]{}"]')
#: The rest of a JSON string after its opening quote (unrolled: linear, no backtracking).
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if ``text`` nests arrays/objects deeper than ``limit``; run before ``json.loads``.

    A linear scan that skips string contents, so it costs a regex pass over the body and
    never recurses: Python's parser raises ``RecursionError`` near 1,000 levels, and
    validating a deep value recurses again. Malformed text is not judged here.
    """
    depth = 0
    position = 0
    while True:
        token = _JSON_TOKEN.search(text, position)
        if token is None:
            return False
        char = token.group()
        if char == '"':
            rest = _STRING_REST.match(text, token.end())
            if rest is None:  # an unterminated string: nothing after it can nest
                return False
            position = rest.end()
            continue
        position = token.end()
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth = max(0, depth - 1)


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | JsonObject = Field(description="The user's message, or a JSON object.")
    metadata: JsonObject = Field(default_factory=dict, description="Opaque; echoed in logs.")


class AgentRef(BaseModel):
    name: str
    version: str = Field(description="The agent's human version (AgentSpec.version).")
    release: str = Field(
        description="The release that answered: a content hash of the agent (r- + 12 hex)."
    )
    prompt_version: str = Field(description="The prompt file version that answered.")


class ToolCallView(BaseModel):
    """One tool call the agent made while answering."""

    name: str = Field(description="The tool's name.")
    arguments: JsonObject = Field(
        description=(
            "The JSON object the model passed, as parsed; arguments that were not a JSON "
            'object are kept as text: {"_raw": "..."}.'
        )
    )


class InvokeResponse(BaseModel):
    output: str | JsonObject
    usage: Usage
    cost_usd: float
    model: str
    agent: AgentRef
    request_id: str
    tool_calls: list[ToolCallView] = Field(
        default_factory=list, description="The tool calls the agent made, in order."
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    details: JsonObject | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: str
    version: str
    agent: str | None
    checks: dict[str, str]
    release: str | None = Field(
        default=None, description="The release this agent function serves (null: platform)."
    )
    prompt_version: str | None = Field(
        default=None, description="The prompt version it serves (null: platform)."
    )


# --- sessions -----------------------------------------------------------------------


class SessionCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: JsonObject = Field(
        default_factory=dict, description="Opaque, at most 4 KB of JSON; returned by GET."
    )


class SessionCreated(BaseModel):
    session_id: str
    expires_at: str = Field(description="ISO 8601 UTC; each turn pushes it out by the idle TTL.")


class SessionMessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        min_length=1, description="The user's message (at most the agent's max_message_chars)."
    )


class SessionTurnResponse(BaseModel):
    reply: str
    turn: int
    usage: Usage = Field(description="Every model call of this turn (incl. any summarisation).")
    cost_usd: float
    session_cost_usd: float
    request_id: str = Field(description="The request that sent the message.")
    tool_calls: list[ToolCallView] = Field(
        default_factory=list, description="The tool calls the agent made in this turn, in order."
    )
    release: str = Field(description="The release that ran the turn (r- + 12 hex).")
    prompt_version: str = Field(description="The prompt version that ran the turn.")


class SessionMessageView(BaseModel):
    index: int
    role: str
    content: str
    turn: int
    created_at: str
    truncated: bool | None = None
    release: str | None = Field(
        default=None, description="Assistant messages: the release that wrote the reply."
    )


class SessionView(BaseModel):
    session_id: str
    agent: str
    created_at: str
    expires_at: str
    metadata: JsonObject
    turns: int
    message_count: int
    usage: Usage
    cost_usd: float
    summarized_through: int = Field(description="Messages up to this index are in the summary.")
    messages: list[SessionMessageView]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end.")

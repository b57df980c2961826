"""Request checks: reject what OpenAI would reject with 400, in its error shape."""

from __future__ import annotations

from typing import Any

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class BadRequest(Exception):
    """A 400 answer in OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def validate_chat_body(body: Any) -> dict[str, Any]:
    """Check the request just enough to reject what OpenAI would reject with 400."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of messages.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise BadRequest(
                f"Invalid message at index {index}: it needs a 'role' among {sorted(_ROLES)}.",
                f"messages[{index}]",
            )
    for param in ("max_completion_tokens", "max_tokens"):
        limit = body.get(param)
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise BadRequest(f"'{param}' must be an integer >= 1.", param)
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)
    ):
        raise BadRequest("'tools' must be an array of tool objects.", "tools")
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict):
            raise BadRequest("'response_format' must be an object.", "response_format")
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise BadRequest(
                    "'response_format.json_schema.schema' must be an object.",
                    "response_format.json_schema",
                )
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be a boolean.", "stream")
    return body

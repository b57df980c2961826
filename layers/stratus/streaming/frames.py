"""The WebSocket protocol's frames (issue 17; ``events/websocket/schema.json``).

Client -> server: ``{"action": "invoke", "id", "agent", "input"}`` and
``{"action": "message", "id", "agent", "session_id", "message"}``. Server -> client:
``delta``, ``tool``, ``done`` and ``error`` frames (:func:`error_frame`). A bad frame is
answered with an ``error`` frame carrying the REST code and never closes the connection:
``payload_too_large`` (over :data:`MAX_FRAME_BYTES`), ``invalid_json``, ``not_found``
(unknown action), ``validation_error`` (missing or wrong fields, ``details.fields``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from stratus.contracts import MAX_JSON_DEPTH, json_too_deep
from stratus.errors import (
    InvalidJson,
    PayloadTooLarge,
    RouteNotFound,
    StratusError,
    ValidationFailed,
)

#: API Gateway's WebSocket frame limit: a bigger client frame is ``payload_too_large``.
MAX_FRAME_BYTES = 32 * 1024
ACTIONS = ("invoke", "message")

ClientId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
AgentName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class StreamForbidden(StratusError):
    """The connection's key lacks the action's scope (``details.missing_scope``)."""

    code = "forbidden"
    status = 403


class RequestInProgress(StratusError):
    """This client id is still running (a resend after a reconnect): it never runs twice."""

    code = "request_in_progress"
    status = 409


class InvokeFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["invoke"]
    id: ClientId
    agent: AgentName
    input: str | dict[str, Any] = Field(description="The user's message, or a JSON object.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class MessageFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["message"]
    id: ClientId
    agent: AgentName
    session_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    message: Annotated[str, StringConstraints(min_length=1)]


ClientFrame = InvokeFrame | MessageFrame
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "invoke": TypeAdapter(InvokeFrame),
    "message": TypeAdapter(MessageFrame),
}
#: Which scope each action needs (the REST routes' scopes).
SCOPES = {"invoke": "invoke", "message": "sessions"}


def frame_text(body: Any, base64_encoded: bool = False) -> str:
    """The frame's text: ``payload_too_large`` past the limit, ``invalid_json`` if not UTF-8."""
    if body is None:
        body = ""
    raw: bytes
    if base64_encoded:
        try:
            raw = base64.b64decode(str(body), validate=True)
        except (ValueError, binascii.Error):
            raise InvalidJson("the frame is not valid JSON") from None
    else:
        raw = body.encode() if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_FRAME_BYTES:
        raise PayloadTooLarge(
            f"the frame is {len(raw)} bytes; the limit is {MAX_FRAME_BYTES}",
            details={"limit": MAX_FRAME_BYTES},
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("the frame is not valid JSON: it is not UTF-8") from None


def client_id_of(text: str) -> str | None:
    """The frame's ``id`` when it has a usable one (error frames echo it)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str) and 0 < len(found) <= 128 else None


def parse_frame(text: str) -> ClientFrame:
    """A validated client frame, or the ``StratusError`` its error frame carries."""
    if json_too_deep(text):
        raise InvalidJson(
            f"the frame is not accepted: JSON nesting too deep (more than {MAX_JSON_DEPTH})",
            details={"max_depth": MAX_JSON_DEPTH},
        )
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidJson("the frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValidationFailed(
            "invalid frame: a frame is a JSON object",
            details={"fields": [{"field": "", "message": "expected an object", "type": "type"}]},
        )
    action = value.get("action")
    if action is None:
        raise ValidationFailed(
            "invalid frame: action",
            details={
                "fields": [{"field": "action", "message": "Field required", "type": "missing"}]
            },
        )
    if action not in _ADAPTERS:
        raise RouteNotFound(
            f"no action {action!r}; the actions are {', '.join(ACTIONS)}",
            details={"action": str(action), "actions": list(ACTIONS)},
        )
    try:
        frame: ClientFrame = _ADAPTERS[str(action)].validate_python(value)
    except PydanticValidationError as exc:
        fields = [
            {
                "field": ".".join(str(part) for part in problem.get("loc", ())),
                "message": problem.get("msg", ""),
                "type": problem.get("type", ""),
            }
            for problem in exc.errors(include_url=False, include_input=False)
        ]
        first = fields[0]["field"] if fields else "frame"
        raise ValidationFailed(f"invalid frame: {first}", details={"fields": fields}) from None
    return frame


def error_frame(client_id: str | None, error: StratusError) -> dict[str, Any]:
    """``{"type": "error", "id", "error": {"code", "message", "details"?}}``."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    return {"type": "error", "id": client_id, "error": body}

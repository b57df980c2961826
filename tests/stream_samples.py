"""The WebSocket samples (``events/websocket/``, issue 17): how each one is checked.

``check_websocket_sample(name, value)`` validates a sample by its kind: the schema is a
valid JSON Schema (2020-12); client and server frames validate against it (client frames
also pass the runtime's own frame models); the ``$connect`` event has the WebSocket
REQUEST-authorizer shape and the MESSAGE event carries a frame the router accepts.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from tests.support import load_event

FRAMES = (
    "websocket/invoke_frame.json",
    "websocket/message_frame.json",
    "websocket/delta_frame.json",
    "websocket/tool_frame.json",
    "websocket/done_frame.json",
    "websocket/error_frame.json",
)


def check_websocket_sample(name: str, value: Any) -> None:
    from stratus.streaming import parse_frame

    schema = load_event("websocket/schema.json")
    if name == "websocket/schema.json":
        jsonschema.Draft202012Validator.check_schema(value)
        return
    if name == "websocket/connect.json":
        # A WebSocket REQUEST-authorizer event (no path or method: not the REST model).
        assert value["type"] == "REQUEST" and value["methodArn"].endswith("/$connect")
        context = value["requestContext"]
        assert context["routeKey"] == "$connect" and context["eventType"] == "CONNECT"
        assert context["connectionId"] and isinstance(value["queryStringParameters"], dict)
        return
    if name == "websocket/message_event.json":
        assert value["requestContext"]["eventType"] == "MESSAGE"
        frame = json.loads(value["body"])
        jsonschema.validate(frame, schema)
        parse_frame(value["body"])
        return
    assert name in FRAMES, name
    jsonschema.validate(value, schema)
    if "action" in value:
        parse_frame(json.dumps(value))

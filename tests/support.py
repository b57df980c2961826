"""Shared test helpers: sample events, a Lambda context, calling handlers."""

from __future__ import annotations

import copy
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


@dataclass
class FakeLambdaContext:
    """The Lambda context object: a deadline that really counts down."""

    function_name: str = "stratus-test"
    timeout_s: float = 28.0
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-test"
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/stratus-test"
    log_stream_name: str = "2026/11/21/[$LATEST]0123456789"
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_s - (time.monotonic() - self._started)
        return max(0, int(left * 1000))


def api_event(
    agent: str | None = "triage",
    *,
    body: Any = None,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    tenant_id: str | None = "tenant-a",
    path: str | None = None,
    method: str = "POST",
) -> dict[str, Any]:
    """A REST API proxy event built from the sample, as API Gateway sends it."""
    event = copy.deepcopy(load_event("api/invoke_triage.json"))
    event["path"] = path or f"/v1/agents/{agent}/invoke"
    event["resource"] = event["path"]
    event["httpMethod"] = method
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    event["headers"] = hdrs
    event["multiValueHeaders"] = {k: [v] for k, v in hdrs.items()}
    if raw_body is not None:
        event["body"] = raw_body
    elif body is not None:
        event["body"] = json.dumps(body)
    else:
        event["body"] = None
    if tenant_id is None:
        event["requestContext"]["authorizer"] = None
    else:
        # What the authorizer passes for a tenant's owner key: every scope (issue 14).
        event["requestContext"]["authorizer"] = {
            "principalId": tenant_id,
            "tenant_id": tenant_id,
            "key_id": "key_" + "0" * 20,
            "scopes": "invoke sessions jobs jobs:approve usage:read audit:read admin",
            "role": "",
            "customer_id": "",
        }
    return event


@dataclass
class ApiReply:
    status: int
    body: Any
    headers: dict[str, str]


def call(handler: Any, event: dict[str, Any], context: Any = None) -> ApiReply:
    raw = handler(event, context or FakeLambdaContext())
    body = raw.get("body")
    parsed = json.loads(body) if body else None
    headers = dict(raw.get("headers") or {})
    for name, values in (raw.get("multiValueHeaders") or {}).items():
        headers[name] = ",".join(values)
    return ApiReply(status=raw["statusCode"], body=parsed, headers=headers)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``text`` (log lines, EMF documents)."""
    docs = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            docs.append(doc)
    return docs

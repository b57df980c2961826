"""Echo the event with the environment and context the runtime gave the handler."""

from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    first = context.get_remaining_time_in_millis()
    time.sleep(float(event.get("sleep", 0)))
    return {
        "event": event,
        "env": {name: os.environ.get(name) for name in event.get("env", [])},
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "client_context": context.client_context,
            "cognito_identity_id": context.identity.cognito_identity_id,
        },
        "remaining_ms": [first, context.get_remaining_time_in_millis()],
        "cwd": os.getcwd(),
        "pid": os.getpid(),
    }


def unmarshalable(event: Any, context: Any) -> dict[str, Any]:
    return {"tags": {"a", "b"}}


def decimals(event: Any, context: Any) -> dict[str, Any]:
    return {"count": Decimal("3"), "price": Decimal("1.25")}

"""An API-Gateway-style answer whose status, cost and model come from the environment."""

from __future__ import annotations

import json
import os
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    status = int(os.environ.get("ANSWER_STATUS", "200"))
    body = {
        "cost_usd": float(os.environ.get("ANSWER_COST", "0.001")),
        "model": os.environ.get("ANSWER_MODEL", "stable-model"),
        "agent": {"name": "t", "release": os.environ.get("ANSWER_RELEASE", "r-stable")},
        "version": context.function_version,
        "cwd": os.getcwd(),
        "release_env": os.environ.get("STRATUS_RELEASE"),
    }
    return {"statusCode": status, "body": json.dumps(body)}

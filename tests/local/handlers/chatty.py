"""Write to stdout and stderr the ways handlers do: print, JSON logs, stdlib logging."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

print("chatty init line")


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    print(f"plain text {event['tag']}")
    print(
        json.dumps(
            {
                "level": "INFO",
                "message": f"json {event['tag']}",
                "function_request_id": context.aws_request_id,
            }
        )
    )
    print(f"to stderr {event['tag']}", file=sys.stderr)
    logging.getLogger("chatty").warning("logged %s", event["tag"])
    return {"protocol": "intact"}

"""Sleep for ``event["sleep"]`` seconds, then say which process did it."""

from __future__ import annotations

import os
import time
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    started = time.time()
    time.sleep(float(event.get("sleep", 0)))
    return {"pid": os.getpid(), "started": started, "ended": time.time()}

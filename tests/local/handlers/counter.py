"""Count invocations in a module global: proves warm reuse and re-init."""

from __future__ import annotations

import os
import time
from typing import Any

INIT_PID = os.getpid()
COUNT = 0


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global COUNT
    COUNT += 1
    time.sleep(float(event.get("sleep", 0)))
    return {"count": COUNT, "pid": INIT_PID}

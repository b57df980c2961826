"""A handler whose import takes ``SLOW_INIT_S`` seconds and says when it ran."""

from __future__ import annotations

import os
import time
from typing import Any

INIT_STARTED = time.time()
time.sleep(float(os.environ.get("SLOW_INIT_S", "0.3")))
INIT_ENDED = time.time()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(float(event.get("sleep", 0)))
    return {"pid": os.getpid(), "init": [INIT_STARTED, INIT_ENDED]}

"""Kill the execution environment mid-invocation, as a native crash would."""

from __future__ import annotations

import os
from typing import Any


def handler(event: Any, context: Any) -> None:
    print("about to exit", flush=True)
    os._exit(3)

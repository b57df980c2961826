"""Helpers shared by the end-to-end tests against a running local cloud."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def offline_environ() -> dict[str, str]:
    """This environment without a real model key: the local cloud uses the fake model."""
    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}

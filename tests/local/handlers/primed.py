"""Registers init hooks as an agent function does: the worker must run them at init."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import snapshot_restore_py

#: What the hooks did, in order, and in which process.
EVENTS: list[str] = []
PRIME_S = 0.2


def prime(label: str, *, pause_s: float = 0.0) -> None:
    # The module is fully imported by now (HANDLER_DEFINED is set at its end).
    module = sys.modules[__name__]
    EVENTS.append(f"{label}:{getattr(module, 'HANDLER_DEFINED', False)}:{os.getpid()}")
    time.sleep(pause_s)


def restored() -> None:
    EVENTS.append("after_restore")


snapshot_restore_py.register_before_snapshot(prime, "prime", pause_s=PRIME_S)
snapshot_restore_py.register_after_restore(restored)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"events": list(EVENTS), "pid": os.getpid()}


HANDLER_DEFINED = True

"""Paths and the sample event shared by the benchmark sections."""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EVENT_FILE = REPO / "events" / "api" / "invoke_triage.json"


def base_event() -> dict[str, Any]:
    """The sample triage invoke event, authorised for tenant ``bench``, no Idempotency-Key."""
    event: dict[str, Any] = json.loads(EVENT_FILE.read_text(encoding="utf-8"))
    for name in ("headers", "multiValueHeaders"):
        event[name] = {k: v for k, v in event[name].items() if k.lower() != "idempotency-key"}
    event["requestContext"]["authorizer"] = {"tenant_id": "bench", "scopes": "invoke"}
    return event


def make_event(base: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
    """A copy of ``base`` with a fresh request id and, optionally, an Idempotency-Key."""
    event = copy.deepcopy(base)
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    if idempotency_key is not None:
        event["headers"]["Idempotency-Key"] = idempotency_key
        event["multiValueHeaders"]["Idempotency-Key"] = [idempotency_key]
    return event


@contextlib.contextmanager
def frozen_heap() -> Iterator[int]:
    """Inside, what the process built so far is out of the collector's reach, as in a
    warm agent function, whose init froze its heap (``stratus.snapstart.freeze_heap``);
    yields how many objects that froze. Unfrozen on leaving.

    Without it every collection in a sample walks the setup too (moto's tables and
    models, the SDKs, the fake servers), a cost no Lambda instance of Stratus pays, and
    moto's own garbage sets those collections off in the runtime's code.
    """
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()

"""Make moto's DynamoDB answer one request at a time, as atomically as DynamoDB does.

DynamoDB guarantees that a conditional write, an ``UpdateItem ... ADD`` and a
``TransactWriteItems`` are atomic. moto (5.x) does not, once requests come from
several threads (the in-process mock under a threaded test, or moto's threaded
server): ``update_item`` reads the item, checks the condition and writes it back
with no lock, so two conditional writes can both pass; and
``transact_write_items`` backs up *whole tables* with ``deepcopy`` and, on a
cancelled transaction, puts the backups back, undoing every write other threads
made in between. Code that is correct on DynamoDB then loses updates on moto.

:func:`install` serialises moto's DynamoDB request handling behind one lock.
That is no stronger than DynamoDB (each request is atomic there, too; concurrent
requests to *different* items are not serialised, but nothing may rely on that
either), so tests that pass with it exercise real DynamoDB semantics. It changes
moto's classes process-wide and is idempotent; :func:`uninstall` reverts it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_ORIGINAL: Any = None


def install() -> None:
    """Serialise every DynamoDB request moto handles in this process."""
    global _ORIGINAL
    from moto.dynamodb.responses import DynamoHandler

    if _ORIGINAL is not None:
        return
    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    _ORIGINAL = original
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def uninstall() -> None:
    global _ORIGINAL
    from moto.dynamodb.responses import DynamoHandler

    if _ORIGINAL is not None:
        DynamoHandler.call_action = _ORIGINAL  # type: ignore[method-assign]
        _ORIGINAL = None

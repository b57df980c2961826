"""A before-snapshot hook that raises: the init fails as Lambda reports it."""

from __future__ import annotations

from typing import Any

import snapshot_restore_py


class PrimingError(Exception):
    pass


def prime() -> None:
    raise PrimingError("price table unreadable")


snapshot_restore_py.register_before_snapshot(prime)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"ok": True}

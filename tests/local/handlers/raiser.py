"""Always raise: a handler error, or an SQS batch that fails as a whole."""

from __future__ import annotations

from typing import Any


class OrderRejected(Exception):
    pass


def _check(event: dict[str, Any]) -> None:
    raise OrderRejected(event.get("message", "always fails"))


def handler(event: dict[str, Any], context: Any) -> None:
    _check(event)

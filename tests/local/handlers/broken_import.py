"""A module whose init fails: it imports a package that does not exist."""

from __future__ import annotations

from typing import Any

import stratus_package_that_does_not_exist  # noqa: F401


def handler(event: Any, context: Any) -> None:
    return None

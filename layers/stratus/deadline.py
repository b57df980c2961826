"""How much time the current invocation has left.

Kept free of heavy imports: handlers build a deadline before they know whether
a model will be called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol


class Deadline(Protocol):
    def remaining_s(self) -> float: ...


class NoDeadline:
    """Outside Lambda (scripts, tests): only the configured timeouts apply."""

    def remaining_s(self) -> float:
        return math.inf


@dataclass(frozen=True)
class LambdaDeadline:
    """The time the current invocation has left, read from its Lambda context."""

    context: Any

    def remaining_s(self) -> float:
        return float(self.context.get_remaining_time_in_millis()) / 1000.0

"""The retry decision of a failed job run, and when its message comes back.

* :func:`failure_action` by receive count: release, retry or fail;
* :func:`retry_delay_s`: exponential backoff with jitter by receive count, applied to
  the record's message with ``ChangeMessageVisibility`` (:class:`Delivery`), so a
  retryable failure comes back in seconds, not after the queue's visibility
  timeout (six times the worker's timeout).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from stratus.errors import (
    DeadlineExceeded,
    ModelProviderError,
    ModelRateLimited,
    ModelUnavailable,
    StratusError,
)

#: Failures worth another delivery: the provider or the clock, not the request.
RETRYABLE: tuple[type[StratusError], ...] = (
    ModelUnavailable,
    ModelRateLimited,
    ModelProviderError,
    DeadlineExceeded,
)
#: SQS refuses a visibility timeout above 12 hours.
MAX_VISIBILITY_S = 43_200

FailureAction = Literal["release", "retry", "fail"]


@dataclass(frozen=True)
class Delivery:
    """The SQS message a record came from: where to change its visibility."""

    queue_url: str
    receipt_handle: str
    receives: int = 1


def failure_action(exc: BaseException, receives: int, max_receives: int) -> FailureAction:
    """What a failed run does on delivery ``receives`` of ``max_receives``.

    ``release``: drop the lease and raise (a retryable error before the last
    delivery); ``retry``: raise, keeping the lease (an unexpected error before the
    last delivery); ``fail``: fail the job (a non-retryable :class:`StratusError`,
    or any error on the last delivery, rather than leave it running while its
    message goes to the DLQ).
    """
    last = receives >= max_receives
    if isinstance(exc, RETRYABLE):
        return "fail" if last else "release"
    if isinstance(exc, StratusError):
        return "fail"
    return "fail" if last else "retry"


def retry_delay_s(
    receives: int, *, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
) -> int:
    """Seconds before delivery ``receives + 1``: uniform(d/2, d), d = min(cap, base * 2**(n-1)).

    With base 10 s and cap 300 s: 5-10 s, 10-20 s, 20-40 s, ... up to 150-300 s.
    """
    ceiling = min(cap_s, base_s * 2 ** max(0, min(receives, 30) - 1))
    return max(0, min(MAX_VISIBILITY_S, round(ceiling / 2 + rng() * ceiling / 2)))

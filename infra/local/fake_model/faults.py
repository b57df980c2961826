"""Injectable faults: HTTP errors, ``Retry-After`` and delays for matching requests."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


class Fault(BaseModel):
    """An injected failure: the next matching requests get this answer.

    A pydantic model rather than a dataclass so the same definition validates
    faults posted as JSON to ``/_fake/faults`` from another process.
    ``status=200`` with a ``delay_s`` is a slow success: the request is held for
    the delay and then answered normally (the way to trigger client timeouts).

    ``retry_after`` sets a ``Retry-After`` header (seconds), ``times`` is how
    many matching requests it applies to (``-1``: all of them), ``model`` and
    ``api_key`` narrow it to one model or one key, and ``message`` is the
    error message. Faults apply to chat completions only, and only to requests
    that are authenticated and well formed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int = 500
    retry_after: float | None = Field(default=None, ge=0)
    delay_s: float = Field(default=0.0, ge=0)
    times: int = Field(default=1, ge=-1)
    model: str | None = None
    api_key: str | None = None
    message: str = "injected fault"

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: int) -> int:
        # Anything else (1xx, 3xx) would confuse HTTP clients rather than test them.
        if value != 200 and not 400 <= value <= 599:
            raise ValueError("status must be 200 or an HTTP error status (400-599)")
        return value

    def matches(self, model: str | None, api_key: str | None) -> bool:
        """Whether a request for ``model`` with ``api_key`` is targeted by this fault."""
        return (self.model is None or self.model == model) and (
            self.api_key is None or self.api_key == api_key
        )


FAULTS = TypeAdapter(list[Fault] | Fault)


class FaultSlot:
    """A fault with its remaining uses; the :class:`Fault` itself stays immutable."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times

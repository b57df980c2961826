"""Redaction of streamed text: deltas go out as they come, minus a held-back tail.

A pattern (an e-mail address, a card number) can straddle two deltas, so
:class:`StreamRedactor` emits only the part of its buffer that no match can still
reach into: everything up to a *safe* whitespace at least ``hold`` (64) characters
from the end. A whitespace is safe when neither neighbour is a digit, an upper-case
letter or one of ``()+-``: the built-in patterns that contain spaces (spaced card
numbers, IBANs, phone numbers) consist of those only, and e-mail addresses and keys
contain no whitespace, so no built-in match crosses a safe cut (an operator's extra
pattern that spans spaces may). The emitted part is redacted;
:meth:`StreamRedactor.close` emits the rest, redacted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: Characters held back: longer than any built-in match (a spaced IBAN is at most 42).
HOLD = 64
_UNSAFE = re.compile(r"[0-9A-Z()+\-]")


class StreamRedactor:
    def __init__(
        self, redact: Callable[[str], str], emit: Callable[[str], None], *, hold: int = HOLD
    ) -> None:
        self._redact = redact
        self._emit = emit
        self._hold = hold
        self._buffer = ""

    def feed(self, text: str) -> None:
        """Add a delta; emit the redacted part of the buffer no pattern can still extend."""
        if not text:
            return
        self._buffer += text
        limit = len(self._buffer) - self._hold
        if limit <= 0:
            return
        cut = self._safe_cut(limit)
        if cut <= 0:
            return
        ready, self._buffer = self._buffer[: cut + 1], self._buffer[cut + 1 :]
        self._emit(self._redact(ready))

    def _safe_cut(self, limit: int) -> int:
        buf = self._buffer
        for cut in range(limit - 1, 0, -1):
            if buf[cut].isspace() and not (
                _UNSAFE.match(buf[cut - 1]) or _UNSAFE.match(buf[cut + 1])
            ):
                return cut
        return 0

    def close(self) -> None:
        """Emit whatever is left, redacted (the end of a model call)."""
        if self._buffer:
            rest, self._buffer = self._buffer, ""
            self._emit(self._redact(rest))

"""A logging filter that redacts PII from log lines (``stratus.observability.logger``).

Every record's message and its string ``extra`` fields (the reply text a line may
carry, an error message quoting the model) pass through the same
:class:`~stratus.guardrails.pii.Redactor` as replies, so a log group never holds a
customer's card number or e-mail address. Nested values (dicts, lists) are not
walked: the runtime logs usage and ids there, never text. It costs a few
microseconds per line (``bench/guardrails.py`` measures it).
"""

from __future__ import annotations

import logging

from stratus.guardrails.pii import Redactor

#: The attributes every LogRecord has: never scanned (they are not the caller's text).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not record.args:
            record.msg = self._redact(record.msg)
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self._redact(value))
        return True

"""PII redaction: typed placeholders for what must not leave Stratus or reach a log.

Caught: e-mail addresses (``[email]``); AWS access key ids, ``AKIA``/``ASIA``...
(``[aws_key]``); API keys of the common shapes, ``sk-...``, ``ghp_...``, ``xox?-...``,
``AIza...`` (``[api_key]``); IBANs whose mod-97 check holds (``[iban]``); payment
card numbers of 13-19 digits that pass Luhn (``[card]``); phone numbers in
international (``+49 30 1234567``), North American (``(555) 123-4567``,
``555-123-4567``) or national trunk (``030 1234 5678``) form (``[phone]``); and an
agent's extra patterns (``[<name>]``).

Not caught: names, postal addresses, dates of birth, free-form secrets, numbers
written out in words, card numbers that fail Luhn (on purpose: order ids and
amounts stay), phone numbers without any separator or prefix.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
)
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b")
_API_KEY = re.compile(
    r"(?<![\w-])(?:"
    r"(?:sk|pk|rk)-(?:proj-|live-|test-|ant-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}"
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r")"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}"
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"
    r"|\d{3}[.-]\d{3}[.-]\d{4}"
    r"|0\d{2,4}[ /-]\d{3,4}[ -]?\d{3,5}"
    r")(?![\w])"
)


def luhn(digits: str) -> bool:
    """Whether ``digits`` (digits only) pass the Luhn check."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN without spaces (15-34 characters)."""
    if not 15 <= len(candidate) <= 34:
        return False
    moved = candidate[4:] + candidate[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _card(match: re.Match[str]) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if 13 <= len(digits) <= 19 and luhn(digits) else None


def _phone(match: re.Match[str]) -> str | None:
    digits = sum(ch.isdigit() for ch in match.group())
    return "[phone]" if 7 <= digits <= 15 else None


def _iban(match: re.Match[str]) -> str | None:
    """The longest prefix of the run that is a valid IBAN (a following word may have
    been swallowed by the pattern), the rest kept."""
    text = match.group()
    for end in range(len(text), 14, -1):
        if text[end - 1] == " ":
            continue
        if iban_valid(text[:end].replace(" ", "")):
            return "[iban]" + text[end:]
    return None


Replacer = Callable[[re.Match[str]], str | None]


@dataclass(frozen=True)
class Detector:
    name: str
    pattern: re.Pattern[str]
    #: Validates a match and gives its replacement (None: not PII, kept).
    check: Replacer | None = None
    #: A cheap pre-test: the detector only runs when this character is in the text.
    needs: str | None = None


BUILTIN: tuple[Detector, ...] = (
    Detector("aws_key", _AWS_KEY),
    Detector("api_key", _API_KEY),
    Detector("email", _EMAIL, needs="@"),
    Detector("iban", _IBAN, _iban),
    Detector("card", _CARD, _card),
    Detector("phone", _PHONE, _phone),
)
_DIGIT = re.compile(r"\d")


class Redactor:
    """Replaces PII in text with placeholders and counts what it replaced."""

    def __init__(self, extra: Iterable[tuple[str, str]] = ()) -> None:
        self.detectors = BUILTIN + tuple(
            Detector(name, re.compile(pattern)) for name, pattern in extra
        )

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with every detected item replaced, and the count per placeholder."""
        counts: Counter[str] = Counter()
        if not text:
            return text, counts
        has_digit = _DIGIT.search(text) is not None
        for detector in self.detectors:
            if detector.needs is not None and detector.needs not in text:
                continue
            if detector.check in (_card, _phone, _iban) and not has_digit:
                continue
            text = detector.pattern.sub(_replace(detector, counts), text)
        return text, counts

    def __call__(self, text: str) -> str:
        return self.redact(text)[0]


def _replace(detector: Detector, counts: Counter[str]) -> Callable[[re.Match[str]], str]:
    placeholder = f"[{detector.name}]"

    def replace(match: re.Match[str]) -> str:
        if detector.check is None:
            counts[detector.name] += 1
            return placeholder
        replacement = detector.check(match)
        if replacement is None:
            return match.group()
        counts[detector.name] += 1
        return replacement

    return replace

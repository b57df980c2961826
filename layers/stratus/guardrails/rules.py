"""Deterministic input screening: known phrasings, kept as data.

The rules live in ``stratus/data/guardrail_rules.json`` (id, category, pattern).
Text is normalised before matching (NFKC, case folded, zero-width characters
dropped, whitespace collapsed), so full-width letters, ``I G N O R E``-style
spacing tricks aside, most cosmetic variants match the same rule. Encoded payloads
are decoded and screened with the same rules: base64 and hex tokens of 16+ characters
and the whole text under rot13. The rules of a category are compiled into one
alternation, so screening is a handful of regex scans (well under a millisecond for
a few kilobytes of text; ``bench/guardrails.py`` measures it).

Screening lowers risk; it is not a proof. Paraphrases, other languages and new
tricks get through rules; the optional classifier catches some of those.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

RULES_FILE = Path(__file__).resolve().parent.parent / "data" / "guardrail_rules.json"

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"), None)
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ROT13 = str.maketrans(_LOWER, _LOWER[13:] + _LOWER[:13])
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){8,}")
_PUNCT = "\"'()[]{}<>,.;:!?`"
#: At most this many encoded runs are decoded per text (a wall of base64 is not free).
MAX_DECODED_RUNS = 8


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    pattern: str
    #: Plain lower-case substrings; the pattern runs only when one occurs in the text.
    triggers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    """One category a text matched: the first rule that did, and how it was encoded."""

    category: str
    rule: str
    #: ``plain``, ``base64``, ``hex`` or ``rot13``.
    encoding: str = "plain"


def normalize(text: str) -> str:
    """NFKC, zero-width characters removed, case folded, whitespace collapsed."""
    if not text.isascii():  # ASCII is already NFKC and has no zero-width characters
        text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return " ".join(text.casefold().split())


class RuleSet:
    """The compiled rules, each behind its triggers (substring tests, in C)."""

    def __init__(self, rules: list[Rule], version: str = "") -> None:
        self.version = version
        self.rules = tuple(rules)
        self._compiled = [(rule, re.compile(rule.pattern, re.DOTALL)) for rule in rules]
        self.categories = tuple(dict.fromkeys(rule.category for rule in rules))

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RuleSet:
        categories = set(data.get("categories") or ())
        rules = []
        seen: set[str] = set()
        for raw in data["rules"]:
            triggers = tuple(str(t) for t in raw.get("triggers") or ())
            rule = Rule(str(raw["id"]), str(raw["category"]), str(raw["pattern"]), triggers)
            if categories and rule.category not in categories:
                raise ValueError(f"rule {rule.id}: unknown category {rule.category!r}")
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            if not triggers or any(t != normalize(t) or not t for t in triggers):
                raise ValueError(f"rule {rule.id}: triggers must be non-empty, lower-case text")
            seen.add(rule.id)
            re.compile(rule.pattern)  # a broken rule fails loudly, at load
            rules.append(rule)
        return cls(rules, str(data.get("version", "")))

    def _scan(self, text: str, encoding: str, found: dict[str, Match]) -> None:
        for rule, pattern in self._compiled:
            if rule.category in found or not any(t in text for t in rule.triggers):
                continue
            if pattern.search(text) is not None:
                found[rule.category] = Match(rule.category, rule.id, encoding)

    def screen(self, text: str) -> list[Match]:
        """Every category ``text`` matches (plainly or encoded), first match each."""
        if not text:
            return []
        found: dict[str, Match] = {}
        plain = normalize(text)
        self._scan(plain, "plain", found)
        if len(found) < len(self.categories):
            for encoding, decoded in _decoded(text):
                self._scan(normalize(decoded), encoding, found)
            self._scan(plain.translate(_ROT13), "rot13", found)
        return sorted(found.values(), key=lambda m: self.categories.index(m.category))


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    return text if text and letters >= 0.7 * len(text) else None


def _decoded(text: str) -> list[tuple[str, str]]:
    """The base64 and hex runs of ``text`` (whitespace-separated tokens of 16+
    characters) that decode to readable text."""
    out: list[tuple[str, str]] = []
    runs = [t.strip(_PUNCT) for t in text.split() if len(t) >= 16][:MAX_DECODED_RUNS]
    for run in runs:
        if _HEX.fullmatch(run):
            decoded = _printable(bytes.fromhex(run))
            if decoded:
                out.append(("hex", decoded))
        elif _BASE64.fullmatch(run):
            try:
                raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
            except (binascii.Error, ValueError):
                continue
            decoded = _printable(raw)
            if decoded:
                out.append(("base64", decoded))
    return out


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The shipped rules, read and compiled once per process."""
    return RuleSet.from_data(json.loads(RULES_FILE.read_text(encoding="utf-8")))

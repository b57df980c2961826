"""Values that validate against a JSON schema (structured output, tool arguments)."""

from __future__ import annotations

import math
import re
from typing import Any

from infra.local.fake_model.markers import TEXT_PREFIX
from infra.local.fake_model.text import truncate

_MAX_SCHEMA_DEPTH = 8  # recursive schemas stop growing beyond this depth
_MAX_SCHEMA_NODES = 2_000  # ... or once this many values were generated (wide recursion)
_ID_TOKEN = re.compile(r"[A-Za-z]+-?\d+|\d+")
_WORD = re.compile(r"[a-z0-9]+")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def best_enum(values: list[Any], text: str) -> Any:
    """Pick the enum value that best matches ``text``, deterministically.

    Each value is split on ``_`` and scores one point per part that shares a
    four-character prefix with a word of the text, so ``order_status`` wins
    for "Where is my order?". This lets routing and classification code be
    exercised end to end with plausible choices. Ties and zero scores fall
    back to ``"other"`` when offered (what a careful model would answer), else
    to the first of the best values. Non-string enums take the first value.
    """
    candidates = [value for value in values if value is not None] or list(values)
    strings = [value for value in candidates if isinstance(value, str)]
    if len(strings) != len(candidates) or not strings:
        return candidates[0] if candidates else None
    prefixes = {word[:4] for word in _WORD.findall(text.lower()) if len(word) >= 4}

    def score(value: str) -> int:
        parts = [part for part in value.lower().split("_") if len(part) >= 4]
        return sum(1 for part in parts if part[:4] in prefixes)

    scores = [score(value) for value in strings]
    best = max(scores)
    winners = [
        value for value, value_score in zip(strings, scores, strict=True) if value_score == best
    ]
    if best > 0 and len(winners) == 1:
        return winners[0]
    if "other" in strings:
        return "other"
    return winners[0]


class SchemaFaker:
    """Builds a value that validates against a JSON schema.

    Structured output and tool arguments are where agent code breaks when a
    model answers something unexpected; generating a *valid* instance of the
    caller's own schema keeps the happy path testable offline. It covers the
    subset of JSON Schema that OpenAI strict mode and pydantic produce:
    ``$ref``/``$defs``, ``anyOf``/``oneOf``/``allOf``, ``const``, ``enum``,
    nullable type lists, numeric bounds, string length and common formats.
    """

    def __init__(self, root: Any, user_text: str, *, tool_arguments: bool) -> None:
        self.root = root
        self.user_text = user_text
        self.tool_arguments = tool_arguments
        self._nodes = 0

    def generate(self) -> Any:
        return self.value(self.root, None, 0)

    def value(self, schema: Any, name: str | None, depth: int) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_SCHEMA_NODES:
            depth = max(depth, _MAX_SCHEMA_DEPTH)  # only what is required from here on
        if schema is True or not isinstance(schema, dict):
            return self._string({}, name)
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return best_enum(schema["enum"], self.user_text)
        for keyword in ("anyOf", "oneOf"):
            options = schema.get(keyword)
            if isinstance(options, list) and options:
                return self.value(self._pick_option(options, depth), name, depth + 1)
        kind = self._type(schema, depth)
        if kind == "null":
            return None
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return True
        return self._string(schema, name)

    def _resolve(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Follow ``$ref`` and merge ``allOf`` so the rest sees one plain schema."""
        for _ in range(_MAX_SCHEMA_DEPTH * 4):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            schema = {**self._lookup(ref), **siblings}
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if not isinstance(part, dict):
                    continue
                part = self._resolve(part, depth)
                properties = {**part.get("properties", {}), **merged.get("properties", {})}
                required = list(
                    dict.fromkeys([*part.get("required", []), *merged.get("required", [])])
                )
                merged = {**part, **merged}
                if properties:
                    merged["properties"] = properties
                if required:
                    merged["required"] = required
            schema = merged
        return schema

    def _lookup(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            return {}  # remote references cannot be resolved offline
        node: Any = self.root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return {}
        return node if isinstance(node, dict) else {}

    @staticmethod
    def _is_null(option: Any) -> bool:
        return isinstance(option, dict) and option.get("type") == "null"

    def _pick_option(self, options: list[Any], depth: int) -> Any:
        # Deep inside a recursive schema, choosing null is what ends the recursion.
        if depth >= _MAX_SCHEMA_DEPTH and any(self._is_null(o) for o in options):
            return {"type": "null"}
        for option in options:
            if not self._is_null(option):
                return option
        return options[0]

    def _type(self, schema: dict[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            if depth >= _MAX_SCHEMA_DEPTH and "null" in kind:
                return "null"
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = kinds[0]
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        out: dict[str, Any] = {}
        for prop, prop_schema in properties.items():
            if depth >= _MAX_SCHEMA_DEPTH and prop not in required:
                continue
            out[prop] = self.value(prop_schema, prop, depth + 1)
        for prop in required:
            if prop not in out:
                out[prop] = self._string({}, prop)
        return out

    def _array(self, schema: dict[str, Any], name: str | None, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [self.value(item, name, depth + 1) for item in prefix]
        items = schema.get("items", {})
        min_items = int(schema.get("minItems", 0))
        count = max(1, min_items)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        if depth >= _MAX_SCHEMA_DEPTH or items is False:
            count = min_items if items is not False else 0
        return [self.value(items, name, depth + 1) for _ in range(count)]

    @staticmethod
    def _bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
        """Lower bound, whether exclusive, upper bound, whether exclusive."""
        low, low_excl, high, high_excl = schema.get("minimum"), False, schema.get("maximum"), False
        excl_min, excl_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        # Draft 4 spelled these as booleans; only the numeric (current) form counts.
        if is_number(excl_min) and (low is None or excl_min >= low):
            low, low_excl = excl_min, True
        if is_number(excl_max) and (high is None or excl_max <= high):
            high, high_excl = excl_max, True
        return low, low_excl, high, high_excl

    def _integer(self, schema: dict[str, Any]) -> int:
        low, low_excl, high, high_excl = self._bounds(schema)
        value = 1
        if low is not None:
            lowest = math.floor(low) + 1 if low_excl else math.ceil(low)
            value = max(value, lowest)
        if high is not None:
            highest = math.ceil(high) - 1 if high_excl else math.floor(high)
            value = min(value, highest)
        return value

    def _number(self, schema: dict[str, Any]) -> float:
        low, low_excl, high, high_excl = self._bounds(schema)
        value = 0.5
        too_low = low is not None and (value <= low if low_excl else value < low)
        too_high = high is not None and (value >= high if high_excl else value > high)
        if (too_low or too_high) and low is not None and high is not None:
            return (low + high) / 2
        if too_low and low is not None:
            return low + 0.5 if low_excl else float(low)
        if too_high and high is not None:
            return high - 0.5 if high_excl else float(high)
        return value

    def _string(self, schema: dict[str, Any], name: str | None) -> str:
        fmt = schema.get("format")
        formatted = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "time": "00:00:00Z",
            "email": "fake@example.com",
            "uri": "https://example.com/fake",
            "url": "https://example.com/fake",
            "uuid": "00000000-0000-4000-8000-000000000000",
            "ipv4": "127.0.0.1",
            "ipv6": "::1",
            "hostname": "example.com",
        }
        if isinstance(fmt, str) and fmt in formatted:
            return formatted[fmt]
        if self.tool_arguments and name is not None and name.lower().endswith("id"):
            # Agents look records up by the id the user mentioned ("order A-1001").
            match = _ID_TOKEN.search(self.user_text)
            text = match.group(0) if match else "unknown"
        else:
            snippet = truncate(self.user_text, 60) or "(no user message)"
            text = TEXT_PREFIX + snippet
        max_length = schema.get("maxLength")
        if isinstance(max_length, int):
            text = text[:max_length]
        min_length = schema.get("minLength")
        if isinstance(min_length, int) and len(text) < min_length:
            text = text + "." * (min_length - len(text))
        return text

"""PII redaction: typed placeholders, checksums that keep order ids and dates,
structured outputs field by field, streamed text, and log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import BaseModel, Field

from stratus.errors import OutputBlocked
from stratus.guardrails.logs import RedactingFilter
from stratus.guardrails.pii import Redactor, iban_valid, luhn
from stratus.guardrails.policy import GuardrailPolicy
from stratus.guardrails.screen import Guardrails
from stratus.guardrails.stream import StreamRedactor

SECRETS = (
    "Mail jane.doe@example.com, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, "
    "AWS key AKIAIOSFODNN7EXAMPLE, token sk-proj-abcdefghijklmnop1234, call +49 30 1234567."
)
RAW = (
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-proj-abcdefghijklmnop1234",
    "+49 30 1234567",
)


def test_every_kind_becomes_its_typed_placeholder_and_is_counted() -> None:
    text, counts = Redactor().redact(SECRETS)
    assert not any(raw in text for raw in RAW), text
    for placeholder in ("[email]", "[card]", "[iban]", "[aws_key]", "[api_key]", "[phone]"):
        assert placeholder in text
    assert counts == {"email": 1, "card": 1, "iban": 1, "aws_key": 1, "api_key": 1, "phone": 1}


def test_checksums_keep_what_is_not_pii() -> None:
    redact = Redactor()
    keep = "Order A-1001 ships 2026-12-03, total 1234.50 EUR, ref 4111111111111112, 3 items."
    assert redact(keep) == keep  # the ref fails Luhn; a date is not a phone number
    assert redact("IBAN GB82 WEST 1234 5698 7654 32.") == "IBAN [iban]."
    assert redact("GB00 WEST 1234 5698 7654 32") == "GB00 WEST 1234 5698 7654 32"
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert redact("ASIAY34FZKBOKMUTVV7A and AKIA short") == "[aws_key] and AKIA short"


def test_extra_patterns_are_redacted_with_their_name() -> None:
    policy = GuardrailPolicy(extra_patterns=({"name": "member_id", "pattern": r"\bM-\d{6}\b"},))  # type: ignore[arg-type]
    guard = Guardrails("t", policy)
    assert guard.redact("member M-123456 asked") == "member [member_id] asked"
    assert Guardrails("t", GuardrailPolicy(output="allow")).redact(SECRETS) == SECRETS


class Decision(BaseModel):
    eligible: bool
    reason: str = Field(max_length=200)
    contacts: list[str] = Field(default_factory=list)


def test_structured_output_is_filtered_field_by_field_and_stays_valid() -> None:
    guard = Guardrails("t", GuardrailPolicy())
    output = {
        "eligible": True,
        "reason": "refund to DE89 3704 0044 0532 0130 00",
        "contacts": ["jane.doe@example.com", "nobody"],
    }
    filtered = guard.filter_output(output, Decision)
    assert filtered == {
        "eligible": True,
        "reason": "refund to [iban]",
        "contacts": ["[email]", "nobody"],
    }
    Decision.model_validate(filtered)


def test_a_structured_output_that_redaction_would_make_invalid_is_blocked() -> None:
    class Tight(BaseModel):
        contact: str = Field(max_length=6)

    guard = Guardrails("t", GuardrailPolicy())
    with pytest.raises(OutputBlocked) as caught:
        guard.filter_output({"contact": "a@b.io"}, Tight)  # "[email]" is 7 characters
    assert caught.value.code == "output_blocked" and caught.value.status == 502


@pytest.mark.parametrize("size", [1, 3, 7, 19, 64])
def test_streamed_text_is_redacted_across_delta_boundaries(size: int) -> None:
    text = ("Here you go. " * 8) + SECRETS + (" That is all for today, thanks." * 4)
    out: list[str] = []
    stream = StreamRedactor(Redactor(), out.append)
    for start in range(0, len(text), size):
        stream.feed(text[start : start + size])
    assert len(out) >= 1 or size == 64  # early text leaves before the end
    stream.close()
    joined = "".join(out)
    assert joined == Redactor()(text)
    assert not any(raw in joined for raw in RAW)


def test_the_stream_holds_back_only_a_tail() -> None:
    out: list[str] = []
    stream = StreamRedactor(Redactor(), out.append, hold=16)
    stream.feed("one two three four five six seven eight nine ten ")
    assert out and "one two" in out[0]
    assert "ten" not in "".join(out)  # held back: a pattern could still extend it
    stream.close()
    assert "".join(out).endswith("ten ")


def test_log_lines_are_redacted_in_the_message_and_string_fields() -> None:
    from aws_lambda_powertools import Logger

    buffer = io.StringIO()
    log = Logger(service="guard-test", logger_handler=logging.StreamHandler(buffer))
    log.addFilter(RedactingFilter())
    log.warning("reply for jane.doe@example.com", extra={"reply": SECRETS, "turns": 3})
    line = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert line["message"] == "reply for [email]"
    assert "[card]" in line["reply"] and not any(raw in line["reply"] for raw in RAW)
    assert line["turns"] == 3


def test_the_shared_logger_redacts() -> None:
    from stratus.observability import logger

    assert any(isinstance(f, RedactingFilter) for f in logger._logger.filters)

"""The guardrails bench section, quick path: it measures and renders, and the
classifier's one extra model call is counted in the request's usage."""

from __future__ import annotations

from bench import guardrails


def test_the_guardrails_section_measures_and_renders() -> None:
    data = guardrails.measure(5, log=lambda _: None)
    assert data["inputs"] >= 100 and data["typical_ms"]["n"] >= data["inputs"]
    rules, classified = data["classifier"]["rules"], data["classifier"]["classifier"]
    assert rules["model_calls"] == 1 and rules["steps"] == ["main:1"]
    assert classified["model_calls"] == 2
    assert classified["steps"] == ["main:guard:input:1", "main:1"]
    assert classified["input_tokens"] == 2 * rules["input_tokens"]
    assert classified["cost_usd"] > rules["cost_usd"]
    text = "\n".join(guardrails.render(data))
    assert text.startswith(guardrails.HEADING)
    assert "one request, shipped eval inputs" in text and "budget" in text

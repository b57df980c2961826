"""The OpenTelemetry bench section (issue 16): both modes measured, the report rendered."""

from __future__ import annotations

from bench import otel as otel_bench
from stratus import otel


def test_the_otel_bench_measures_both_modes_and_renders_its_section() -> None:
    figures = otel_bench.measure(runs=1, invocations=3, log=lambda _: None)
    cold = figures["cold_start"]
    assert cold["off"]["otel_loaded"] is False  # off: never imported, even after init
    assert cold["on"]["otel_loaded"] is True  # on: built at init
    calls = figures["per_call"]
    assert calls["invocations"] == 3 and calls["spans_per_invocation"] == 3
    for mode in ("off", "on"):
        assert calls[mode]["record_us"]["n"] == 3 and calls[mode]["flush_us"]["n"] == 3
    text = "\n".join(otel_bench.render(figures))
    assert text.startswith(otel_bench.HEADING)
    assert "| off |" in text and "| on |" in text and "Init added by export" in text
    assert otel._state == {}  # the bench leaves this process's export off

"""The local cloud's ring of recent log lines: bounded, parsed, filtered by correlation id."""

from __future__ import annotations

import json

import pytest

from infra.local.log_buffer import LogBuffer, parse_line


def _json_line(function: str, message: str, cid: str = "", **extra: object) -> str:
    record = {"level": "INFO", "message": message, **({"correlation_id": cid} if cid else {})}
    return f"[{function}] " + json.dumps({**record, **extra})


def test_a_powertools_line_is_parsed() -> None:
    entry = parse_line(_json_line("stratus-dev-platform", "job accepted", "cid-1", job="j1"))
    assert entry["function"] == "stratus-dev-platform"
    assert (entry["level"], entry["message"], entry["correlation_id"]) == (
        "INFO",
        "job accepted",
        "cid-1",
    )
    assert entry["record"]["job"] == "j1"
    platform = parse_line("[stratus-dev-platform] REPORT RequestId: r1\tDuration: 3 ms")
    assert platform["level"] == "PLATFORM" and platform["correlation_id"] == ""
    raw = parse_line("[fn] [r1] Traceback {not json}")
    assert raw["level"] == "" and "record" not in raw
    emf = parse_line("[fn] " + json.dumps({"_aws": {"CloudWatchMetrics": []}, "X": 1}))
    assert emf["level"] == "METRICS"


def test_the_ring_keeps_the_newest_lines_only() -> None:
    buffer = LogBuffer(capacity=3)
    for n in range(5):
        buffer.write(_json_line("fn", f"line {n}"))
    assert len(buffer) == 3
    assert [e["message"] for e in buffer.query()] == ["line 2", "line 3", "line 4"]
    assert [e["seq"] for e in buffer.query(limit=2)] == [4, 5]
    assert [e["message"] for e in buffer.query(after=4)] == ["line 4"]
    with pytest.raises(ValueError):
        LogBuffer(capacity=0)


def test_query_by_correlation_id_function_and_kind() -> None:
    buffer = LogBuffer()
    buffer.write(_json_line("stratus-dev-platform", "accepted", "abc"))
    buffer.write(_json_line("stratus-dev-worker-triage", "ran", "abc"))
    buffer.write(_json_line("stratus-dev-worker-triage", "other", "xyz"))
    buffer.write("[stratus-dev-callbacks] [r9] posting for abc")  # not JSON, holds the id
    buffer.write("[stratus-dev-platform] END RequestId: r1")
    buffer.write("[fn] " + json.dumps({"_aws": {"CloudWatchMetrics": []}, "correlation_id": "abc"}))
    mine = buffer.query(correlation_id="abc")
    assert [e["message"] for e in mine] == ["accepted", "ran", "[r9] posting for abc"]
    assert [e["message"] for e in buffer.query(correlation_id="abc", platform=False)] == [
        "accepted",
        "ran",
    ]
    assert len(buffer.query(correlation_id="abc", include_metrics=True)) == 4
    assert [e["message"] for e in buffer.query(function="worker")] == ["ran", "other"]
    assert buffer.query(correlation_id="nope") == []


def test_tee_keeps_the_line_and_passes_it_on() -> None:
    buffer = LogBuffer()
    seen: list[str] = []
    sink = buffer.tee(seen.append)
    sink("[fn] hello")
    assert seen == ["[fn] hello"] and buffer.query()[0]["message"] == "hello"
    buffer.write("")  # never raises, whatever the line
    assert len(buffer) == 2

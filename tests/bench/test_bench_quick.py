"""Smoke test of ``python -m bench.run``: it runs, and the report is complete.

Tiny sample counts (``--runs 2 --invokes 5``); nothing about timings is checked,
only that every section is there, that the Stratus handlers keep ``openai``
out of their cold start, that the critical path meets issue 11's round-trip
targets, and that the console gets no EMF metric lines.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from bench import guardrails, memory, otel, streaming
from bench.critical_path import CASES, KINDS, LATENCY_S, litellm_verdict
from bench.report import SECTIONS, targets

REPO = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--runs",
            "2",
            "--invokes",
            "5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Powertools metrics (EMF) and logs of the in-process sections never reach the console.
    assert '"_aws"' not in proc.stdout and '"_aws"' not in proc.stderr
    assert "No application metrics to publish" not in proc.stderr

    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Stratus benchmarks")
    for heading in (*SECTIONS, *(m.HEADING for m in (streaming, guardrails, memory, otel))):
        assert heading in report, heading
    for needle in (
        "Python:",
        "Platform:",
        "CPUs:",
        "Peak RSS",
        "moto latency is not",
        "### Import + first invoke",
        "not measurements from DynamoDB",
        "### Gateway latency over a raw `openai` call",
    ):
        assert needle in report, needle

    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert {"meta", "cold_start", "invoke", "process", "sessions", "aws_calls"} <= set(data)
    rows = {row["messages"]: row for row in data["sessions"]["rows"]}
    assert set(rows) == {10, 1_000, 5_000}
    # Per-turn reads and prompt size do not grow with the session.
    assert rows[5_000]["items_read"] <= 2 * data["sessions"]["max_recent_messages"] + 4
    assert rows[5_000]["prompt_tokens_estimated"] <= data["sessions"]["context_token_budget"]
    modules = {m["label"]: m for m in data["cold_start"]["modules"]}
    assert {"api", "authorizer", "bare_powertools", "naive"} <= set(modules)
    for label in ("api", "authorizer", "bare_powertools", "naive"):
        assert modules[label]["import_ms"]["n"] == 2
        assert f"`{modules[label]['module']}`" in report
    assert modules["api"]["openai_imported"] is False
    assert modules["authorizer"]["openai_imported"] is False
    assert modules["naive"]["openai_imported"] is True  # the detector does detect
    for label in ("api", "naive", "bare_powertools"):
        assert modules[label]["first_invoke"]["first_ms"]["n"] == 2
    assert modules["authorizer"]["first_invoke"] is None

    invoke = data["invoke"]
    assert set(invoke["cases"]) == {"raw", "api", "api_idempotent"}
    for case in invoke["cases"].values():
        assert case["n"] == 5
    for case in ("raw", "api", "api_idempotent"):
        assert invoke["per_call"][case]["model_http_calls"] == 1
    assert invoke["per_call"]["raw"]["aws_api_calls"] == []
    assert invoke["per_call"]["api_idempotent"]["aws_api_calls"]  # the idempotency record
    assert set(invoke["overhead_ms"]) == {"api", "api_idempotent"}
    assert data["process"]["peak_rss_mb"] > 0

    aws = data["aws_calls"]
    scenarios = aws["scenarios"]
    assert {
        "invoke",
        "invoke_idempotent",
        "invoke_idempotent_retry",
        "session_turn",
        "gateway_call",
        "gateway_replay",
    } <= set(scenarios)
    for name in ("invoke", "invoke_idempotent", "session_turn", "gateway_call"):
        s = scenarios[name]
        assert s["dynamodb_calls"] > 0, name
        # Reads can all come from per-process caches (issue 11); every request writes.
        assert s["rcu"] >= 0 and s["wcu"] > 0, name
        assert s["model_http_calls"] >= 1, name
        assert sum(s["by_operation"].values()) == s["aws_calls"], name
        assert sum(row["count"] for row in s["by_caller"]) == s["aws_calls"], name
        assert all(row["caller"] and row["caller"] != "?" for row in s["by_caller"]), name
    # The Idempotency-Key adds the Powertools record on top of the plain invoke.
    assert scenarios["invoke_idempotent"]["dynamodb_calls"] > scenarios["invoke"]["dynamodb_calls"]
    assert "dynamodb:PutItem" in scenarios["invoke_idempotent"]["by_operation"]
    # A retry of the same key and a ledger replay call no model.
    assert scenarios["invoke_idempotent_retry"]["model_http_calls"] == 0
    assert scenarios["gateway_replay"]["model_http_calls"] == 0
    latency = aws["latency"]
    assert set(latency["cases"]) == {
        "raw",
        "client",
        "gateway_no_tables",
        "gateway",
        "gateway_replay",
    }
    for case in latency["cases"].values():
        assert case["n"] == 5
    assert set(latency["added_over_raw_ms"]) == set(latency["cases"]) - {"raw"}

    cp = data["critical_path"]
    assert cp["latency_injected_ms"] == LATENCY_S * 1000 == 5.0
    assert "5 ms slept on every AWS request where the network would be" in report
    kinds = cp["kinds"]
    assert set(kinds) == set(CASES)
    for name in CASES:
        k = kinds[name]
        assert k["ms"]["n"] == cp["samples"], name
        assert k["round_trips"] <= k["dynamodb_requests"] <= k["aws_requests"], name
        if name != "raw":
            assert {"median", "p90"} <= set(k["added_ms"]), name
            assert {"median", "p90"} <= set(k["added_without_moto_ms"]), name
            # moto's own CPU is taken off, never more than a case's added time.
            assert k["added_without_moto_ms"]["median"] <= k["added_ms"]["median"], name
            assert {"median", "p90"} <= set(k["cpu_over_raw_ms"]), name
    for name in ("raw", "litellm"):
        assert kinds[name]["aws_requests"] == 0 and kinds[name]["model_calls"] == 1
    for name in KINDS:
        assert kinds[name]["round_trips"] >= 1, name
        assert kinds[name]["waves"], name
    for name in ("invoke", "invoke_idempotent", "invoke_reviewed", "job_step", "gateway_call"):
        assert kinds[name]["model_calls"] == 1, name
    assert kinds["ledger_replay"]["model_calls"] == 0
    assert kinds["session_turn"]["model_calls"] >= 1
    # Issue 11's round-trip targets.
    assert kinds["invoke"]["round_trips"] <= 2, kinds["invoke"]["waves"]
    assert kinds["gateway_call"]["round_trips"] <= 2, kinds["gateway_call"]["waves"]
    assert kinds["invoke_idempotent"]["round_trips"] <= 3, kinds["invoke_idempotent"]["waves"]
    # A sampled answer's review is one more write, after the answer: one more round trip.
    # (Counted by table: a background refresh of the process's breaker and bucket copies
    # may land inside either sample on a loaded machine, so totals are not compared.)
    reviewed = kinds["invoke_reviewed"]

    def review_writes(kind: str) -> int:
        return sum(len(re.findall(r"PutItem\([^)]*-reviews\)", w)) for w in kinds[kind]["waves"])

    assert review_writes("invoke_reviewed") == 1, reviewed["waves"]
    assert review_writes("invoke") == 0, kinds["invoke"]["waves"]
    assert reviewed["round_trips"] >= kinds["invoke"]["round_trips"], reviewed["waves"]
    assert kinds["session_turn"]["session_table_round_trips"] <= 4, kinds["session_turn"]["waves"]
    # The breaker opened elsewhere is honoured (the count depends on the state cache).
    st = cp["staleness"]
    assert st["warm_call"] == "answered" and st["opened_by_first"], st
    assert st["honoured_after_s"] is not None and st["calls_let_through"] >= 0, st
    assert "### What a cached breaker state lets through" in report
    goals = targets(cp, data["cold_start"])
    assert len(goals) >= 7 and all(goal["measured"] for goal in goals)
    assert all(goal["name"] in report for goal in goals)
    assert data["process"]["stdout_bytes"] > 0  # captured, not shown


def test_litellm_verdict_says_below_within_or_above() -> None:
    assert litellm_verdict(3.0, 4.0) == (True, "below LiteLLM's by 1.0 ms")
    assert litellm_verdict(8.0, 4.0) == (True, "within 5 ms of LiteLLM's (4.0 ms above)")
    assert litellm_verdict(10.0, 4.0)[0] is False

"""``stratus load`` against the local cloud: a real Locust run, bounded to seconds.

Each run creates a tenant of its own (as the command does without ``--api-key``), so
the shared cloud's demo tenant and other modules' tenants are left as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import main
from infra.local.cloud import LocalCloud


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


def test_stratus_load_invoke_writes_the_report(
    facts_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "load",
            "--facts",
            str(facts_file),
            "--scenario",
            "invoke",
            "--users",
            "2",
            "--duration",
            "5s",
            "--max-requests",
            "400",
            "--out",
            str(out),
            "--max-error-rate",
            "0",
        ]
    )
    assert code == 0, (out / "locust.log").read_text(encoding="utf-8")[-2000:]
    assert "report: " in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    totals = summary["totals"]
    assert totals["requests"] > 0 and totals["requests_per_s"] > 0
    assert totals["error_rate"] == 0 and summary["errors"] == []
    [invoke] = summary["requests"]
    assert invoke["name"] == "/v1/agents/{agent}/invoke" and invoke["p50"] > 0
    # Cost per task from the answers, and the tenant's spend from GET /v1/usage agree.
    cost = summary["cost"]["invoke"]
    assert cost["tasks"] >= totals["requests"] - 2  # at most the in-flight ones at the stop
    assert cost["cost_per_task_usd"] > 0
    assert float(summary["usage"]["cost_usd"]) == pytest.approx(cost["cost_usd"], rel=0.05)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# Load test report")
    assert "| POST /v1/agents/{agent}/invoke |" in report
    assert "## Errors by code\n\nNone." in report
    assert (out / "locust.html").exists() and "[locust.html](locust.html)" in report


def test_every_scenario_runs_in_a_mix(facts_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mix"
    code = main(
        [
            "load",
            "--facts",
            str(facts_file),
            "--scenario",
            "all",
            "--users",
            "4",
            "--duration",
            "8s",
            "--turns",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    names = {f"{row['type']} {row['name']}" for row in summary["requests"]}
    assert {
        "POST /v1/agents/{agent}/invoke",
        "POST /v1/agents/{agent}/sessions",
        "POST /v1/jobs",
        "SQS SendMessage ingest",
    } <= names, names
    assert summary["errors"] == [], summary["errors"]

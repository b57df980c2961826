"""``stratus eval`` options: ``--suite FILE``, the ``capture`` sub-command, ``--metrics``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from infra import cli, eval_cli


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "STRATUS_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("STRATUS_OPENAI_BASE_URL", raising=False)


def _suite_file(path: Path, agent: str, case_id: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    suite = {
        "agent": agent,
        "cases": [
            {
                "id": case_id,
                "input": "Where is my order A-1001?",
                "assertions": [{"type": "output_schema"}],
            }
        ],
    }
    path.write_text(json.dumps(suite))
    return path


def _run(tmp_path: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--json", str(out), *argv])
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_suite_runs_the_given_file_instead_of_the_agents_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _suite_file(tmp_path / "elsewhere" / "extra.json", "triage", "extra-case")
    code, result = _run(tmp_path, "--suite", str(extra))
    out = capsys.readouterr().out
    assert code == 0, out
    (verdict,) = result["agents"]
    assert verdict["agent"] == "triage"
    assert [c["id"] for c in verdict["cases"]] == ["extra-case"]
    assert verdict["baseline_score"] is None  # outside the agent's evals dir: no regression check
    assert verdict["notes"] == [
        "no regression check against the baseline: a --suite file is outside the agent's evals dir"
    ]


def test_suite_with_agent_runs_both_and_an_own_file_keeps_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agents = tmp_path / "agents"
    own = agents / "triage" / "evals"
    shutil.copytree(eval_cli.AGENTS_DIR / "triage" / "evals", own)
    shutil.copytree(eval_cli.AGENTS_DIR / "returns" / "evals", agents / "returns" / "evals")
    inside = own / "routing.json"
    code, result = _run(
        tmp_path,
        "--agents-dir",
        str(agents),
        "--agent",
        "returns",
        "--suite",
        str(inside),
        "--tag",
        "critical",
    )
    capsys.readouterr()
    assert code == 0
    by_agent = {v["agent"]: v for v in result["agents"]}
    assert set(by_agent) == {"returns", "triage"}
    assert by_agent["triage"]["baseline_score"] is not None  # its own file: the baseline applies
    assert by_agent["triage"]["notes"] == []
    ids = {c["id"] for c in by_agent["triage"]["cases"]}
    routing = json.loads(inside.read_text())["cases"]
    assert ids == {c["id"] for c in routing if "critical" in c.get("tags", [])}


def test_suite_errors_and_update_baseline_with_an_outside_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _suite_file(tmp_path / "x" / "a.json", "nobody_here", "c")
    assert _run(tmp_path, "--suite", str(extra))[0] == 2
    assert "a.json: agent: no such agent 'nobody_here'" in capsys.readouterr().err
    ok = _suite_file(tmp_path / "x" / "b.json", "triage", "c")
    assert _run(tmp_path, "--suite", str(ok), "--update-baseline")[0] == 2
    assert "--update-baseline: a --suite file outside" in capsys.readouterr().err


def test_help_says_when_the_baseline_check_is_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--suite FILE" in text
    assert "skipped unless the file is in the agent's own evals dir" in text
    for option in ("--stack", "--stage", "--region", "--version", "--function", "--metrics"):
        assert option in text


def test_eval_capture_dispatches_to_the_capture_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[argparse.Namespace] = []
    stub = types.ModuleType("infra.eval_capture")

    def add_parser(subparsers: Any) -> None:
        p = subparsers.add_parser("capture", help="candidate cases from stored interactions")
        p.add_argument("--agent", required=True)
        p.add_argument("--out")

    def run(args: argparse.Namespace) -> int:
        seen.append(args)
        return 7

    stub.add_parser = add_parser  # type: ignore[attr-defined]
    stub.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "infra.eval_capture", stub)
    assert cli.main(["eval", "capture", "--agent", "triage", "--out", "c.json"]) == 7
    assert seen[0].agent == "triage" and seen[0].out == "c.json"
    # Without the sub-command, `stratus eval` is the runner as before.
    assert cli.main(["eval", "--agent", "triage", "--tag", "no-such-tag"]) == 2
    assert "no case has the tag 'no-such-tag'" in capsys.readouterr().err


def test_metrics_are_off_in_process_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _suite_file(tmp_path / "s" / "m.json", "triage", "m")
    assert _run(tmp_path, "--suite", str(extra))[0] == 0
    assert "metrics" not in capsys.readouterr().err

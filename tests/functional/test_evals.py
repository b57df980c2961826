"""``stratus eval`` end to end: the in-process runtime on moto and the offline fake model.

The suites of the shipped agents pass offline and the three reports are written;
a planted regression (the fake model scripted to answer the wrong category)
fails the gate with the agent, the cases and the score drop named; a flaky case
under ``samples: 5, require: majority`` is reported with its pass rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from infra import cli, eval_cli
from infra.local.fake_model import FakeModelServer, Reply


def _decision(category: str) -> Reply:
    return Reply(
        content=json.dumps({"category": category, "confidence": 0.9, "summary": "planted"})
    )


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "STRATUS_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("STRATUS_OPENAI_BASE_URL", raising=False)


@pytest.fixture
def scripted(offline: None, monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer) -> Any:
    """The eval's model endpoint is the test's fake model server, which the test scripts."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_model.url)
    return fake_model


def test_stratus_eval_passes_offline_and_writes_junit_markdown_and_json(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit, report, data = tmp_path / "eval.xml", tmp_path / "eval.md", tmp_path / "eval.json"
    code = cli.main(["eval", "--junit", str(junit), "--report", str(report), "--json", str(data)])
    out, err = capsys.readouterr()
    assert code == 0, out
    assert "[eval] " in err  # the progress line
    result = json.loads(data.read_text())
    assert result["passed"] is True and result["offline"] is True
    agents = {agent["agent"]: agent for agent in result["agents"]}
    assert {"triage", "order_status", "returns", "support"} <= set(agents)
    assert any("critical" in c["tags"] for c in agents["returns"]["cases"])
    multi = next(c for c in agents["support"]["cases"] if c["id"] == "refers-back-to-the-order")
    assert [a["status"] for a in multi["samples"][0]["assertions"][:3]] == ["passed"] * 3
    assert len(agents["triage"]["cases"]) >= 30
    assert agents["triage"]["score"] == agents["triage"]["baseline_score"] == 100.0
    lookup = next(c for c in agents["order_status"]["cases"] if c["id"] == "lookup-in-transit")
    assert lookup["samples"][0]["tool_calls"] == [
        {"name": "lookup_order", "arguments": {"order_id": "A-1001"}}
    ]
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert {s.get("name") for s in suites} >= {"eval.triage", "eval.order_status"}
    assert all(s.get("failures") == "0" for s in suites)
    markdown = report.read_text()
    assert markdown.startswith("# Eval report: PASS")
    assert "| triage | 100.00 | 100.00 |" in markdown


def test_a_planted_regression_fails_the_gate_naming_agent_cases_and_drop(
    scripted: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One sample at a time so the scripted replies meet the cases in plan order.
    planned = eval_cli.load_suites(eval_cli.AGENTS_DIR, ["triage"])["triage"]
    ordered = [c for s in planned for c in s.cases if "order_status" in c.tags]
    wrong = [case.id for case in ordered[:3]]
    scripted.script(*[_decision("billing")] * 3)
    report = tmp_path / "eval.md"
    code = cli.main(
        [
            "eval",
            "--agent",
            "triage",
            "--tag",
            "order_status",
            "--concurrency",
            "1",
            "--report",
            str(report),
            "--json",
            str(tmp_path / "eval.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    verdict = json.loads((tmp_path / "eval.json").read_text())["agents"][0]
    assert verdict["agent"] == "triage" and verdict["passed"] is False
    assert verdict["regressed"] == wrong
    total = sum(1 for _ in ordered)
    drop = round(100 * 3 / total, 2)
    assert f"score dropped {drop:.2f} points against the baseline" in out
    assert f"regressed: {', '.join(wrong)}" in out
    assert f"critical case {wrong[0]} failed (0/1 passed)" in out
    assert out.startswith("triage: score ")
    markdown = report.read_text()
    assert markdown.startswith("# Eval report: FAIL")
    assert (
        f'| {wrong[0]} | FAIL | 0/1 | field_equals: category is "billing", '
        'expected "order_status" |' in markdown
    )


def _flaky_suite(tmp_path: Path) -> Path:
    evals = tmp_path / "triage" / "evals"
    evals.mkdir(parents=True)
    suite = {
        "agent": "triage",
        "threshold": 50,
        "cases": [
            {
                "id": "flaky-order",
                "input": "Where is my order A-1001?",
                "samples": 5,
                "require": "majority",
                "assertions": [
                    {"type": "field_equals", "path": "category", "value": "order_status"}
                ],
            }
        ],
    }
    (evals / "flaky.json").write_text(json.dumps(suite))
    return tmp_path


@pytest.mark.parametrize(("good", "code", "passed"), [(3, 0, True), (2, 1, False)])
def test_a_flaky_case_is_reported_with_its_pass_rate(
    scripted: FakeModelServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    good: int,
    code: int,
    passed: bool,
) -> None:
    # A model that is right `good` times out of 5, interleaved (e.g. right, right, wrong, ...).
    answers = ["order_status" if i < good else "billing" for i in range(5)]
    scripted.script(*[_decision(category) for category in answers[::2] + answers[1::2]])
    agents = _flaky_suite(tmp_path)
    report, data = tmp_path / "eval.md", tmp_path / "eval.json"
    result = cli.main(
        [
            "eval",
            "--agents-dir",
            str(agents),
            "--concurrency",
            "1",
            "--report",
            str(report),
            "--json",
            str(data),
        ]
    )
    capsys.readouterr()
    assert result == code
    case = json.loads(data.read_text())["agents"][0]["cases"][0]
    assert (case["passes"], case["k"], case["pass_rate"]) == (good, 5, good / 5)
    assert case["passed"] is passed
    assert f"| flaky-order | {'pass' if passed else 'FAIL'} | {good}/5 |" in report.read_text()


def test_a_malformed_suite_exits_2_naming_file_case_and_field(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evals = tmp_path / "triage" / "evals"
    evals.mkdir(parents=True)
    bad = {
        "agent": "triage",
        "cases": [
            {"id": "fine", "input": "a", "assertions": [{"type": "cost_at_most", "usd": 1}]},
            {"id": "broken", "input": "b", "assertions": [{"type": "field_one_of", "path": "x"}]},
        ],
    }
    (evals / "bad.json").write_text(json.dumps(bad))
    assert cli.main(["eval", "--agents-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{evals / 'bad.json'}: case 'broken' (cases[1]): cases[1].assertions[0].values" in err
    assert cli.main(["eval", "--agent", "nobody"]) == 2
    assert "--agent nobody: no such agent" in capsys.readouterr().err


def test_api_without_a_running_local_cloud_exits_2(
    offline: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from infra.local.facts import free_port

    monkeypatch.setattr(eval_cli, "LOCAL_FACTS", tmp_path / ".stratus" / "local.json")
    assert cli.main(["eval", "--agent", "triage", "--api"]) == 2
    err = capsys.readouterr().err
    assert "--api: no local cloud is running" in err and "local.json not found" in err
    # A state file left behind by a cloud that has stopped: nothing answers at its URL.
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / ".stratus").mkdir()
    (tmp_path / ".stratus" / "local.json").write_text(
        json.dumps({"api_url": dead, "demo_tenant_key": "sk-x", "fake_model": True})
    )
    assert cli.main(["eval", "--agent", "triage", "--api"]) == 2
    err = capsys.readouterr().err
    assert f"--api: no API answers at {dead}" in err and "stratus dev" in err
    assert cli.main(["eval", "--api", "ftp://example.com", "--key", "k"]) == 2
    assert "is not an http(s) URL" in capsys.readouterr().err


def _session_suite(tmp_path: Path, agent: str, assertions: list[dict[str, Any]]) -> Path:
    evals = tmp_path / agent / "evals"
    evals.mkdir(parents=True)
    suite = {
        "agent": agent,
        "cases": [
            {
                "id": "two-turns",
                "input": ["My order is A-1001.", "When does it come?"],
                "assertions": assertions,
            }
        ],
    }
    (evals / "turns.json").write_text(json.dumps(suite))
    return tmp_path


def test_a_list_of_turns_runs_one_session_and_asserts_on_the_last_turn(
    scripted: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The context is what the session sent with the last message: the first turn, both
    # sides, and not the last message itself (that is the input, not the context).
    scripted.script(Reply(content="Noted: order A-1001."), Reply(content="Tomorrow, by DHL."))
    agents = _session_suite(
        tmp_path,
        "support",
        [
            {"type": "context_contains", "text": "My order is A-1001."},
            {"type": "context_contains", "text": "Noted: order A-1001."},
            {"type": "context_contains", "text": "When does it come?"},
            {"type": "text_contains", "text": "Tomorrow"},
            {"type": "text_not_contains", "text": "Noted"},
        ],
    )
    data = tmp_path / "eval.json"
    # No threshold, baseline or critical tag: the case fails, the gate does not.
    assert cli.main(["eval", "--agents-dir", str(agents), "--json", str(data)]) == 0
    capsys.readouterr()
    sample = json.loads(data.read_text())["agents"][0]["cases"][0]["samples"][0]
    assert [a["status"] for a in sample["assertions"]] == [
        "passed",
        "passed",
        "failed",
        "passed",
        "passed",
    ]
    assert sample["assertions"][2]["message"] == (
        "the last turn's context (2 earlier message(s)) lacks 'When does it come?'"
    )
    assert sample["answer"] == "Tomorrow, by DHL."
    # The conversation's chat requests (support's memory also embeds and extracts facts).
    chats = [
        r.body
        for r in scripted.requests
        if "messages" in r.body
        and (r.body.get("response_format") or {}).get("json_schema", {}).get("name") != "Facts"
    ]
    user_turns = [[m["content"] for m in b["messages"] if m["role"] == "user"] for b in chats]
    assert user_turns == [["My order is A-1001."], ["My order is A-1001.", "When does it come?"]]


def test_a_list_of_turns_for_an_agent_without_sessions_exits_2(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agents = _session_suite(tmp_path, "triage", [{"type": "cost_at_most", "usd": 1}])
    assert cli.main(["eval", "--agents-dir", str(agents)]) == 2
    err = capsys.readouterr().err
    assert "case 'two-turns' (cases[0]): cases[0].input: a list of turns needs an agent" in err

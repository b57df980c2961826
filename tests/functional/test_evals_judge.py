"""The LLM judge end to end: ``stratus eval`` in process, the real gateway, the fake model.

Judge replies are planted on the fake model (one sample at a time, so each
scripted reply meets the call it is meant for: the agent's, then the judge's).
A scripted verdict is scored (pass and fail, with score and reason in the
reports); the fake model's own generated verdict is reported ``skipped``
("offline fake model cannot judge") with its cost still counted, apart from the
agent's. The judge's calls go through the gateway: the usage rollups (budget
items) show ``eval_judge`` apart from the agent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import cli, eval_targets
from infra.local.fake_model import TEXT_PREFIX, FakeModelServer, Reply
from stratus.evals import judge as judge_module
from stratus.evals.models import parse_suite
from stratus.evals.runner import plan, run_cases


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer) -> FakeModelServer:
    for name in ("OPENAI_API_KEY", "STRATUS_OPENAI_API_KEY", "STRATUS_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_model.url)
    return fake_model


def _decision() -> Reply:
    return Reply(
        content=json.dumps({"category": "order_status", "confidence": 0.9, "summary": "s"})
    )


def _verdict(score: float, reason: str) -> Reply:
    return Reply(
        content=json.dumps({"score": score, "reason": reason}),
        usage={"prompt_tokens": 400, "completion_tokens": 40, "reasoning_tokens": 0},
    )


RUBRIC = "The answer files the message under order_status and names no other category."


def _suite(tmp_path: Path, ids: list[str], **extra: Any) -> Path:
    evals = tmp_path / "triage" / "evals"
    evals.mkdir(parents=True)
    cases = [
        {
            "id": case_id,
            "input": "Where is my order A-1001?",
            "assertions": [
                {"type": "output_schema"},
                {"type": "llm_judge", "rubric": RUBRIC, "min_score": 0.7, "tier": "fast"},
            ],
            **extra,
        }
        for case_id in ids
    ]
    (evals / "judged.json").write_text(json.dumps({"agent": "triage", "cases": cases}))
    return tmp_path


def _run(agents: Path, tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    """(exit code, JSON report, Markdown report)."""
    data, report = tmp_path / "eval.json", tmp_path / "eval.md"
    code = cli.main(
        [
            "eval",
            "--agents-dir",
            str(agents),
            "--concurrency",
            "1",
            "--json",
            str(data),
            "--report",
            str(report),
        ]
    )
    return code, json.loads(data.read_text()), report.read_text()


def test_scripted_judge_verdicts_pass_and_fail_with_score_and_reason(
    scripted: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.script(
        _decision(),
        _verdict(0.9, "Filed under order_status."),
        _decision(),
        _verdict(0.3, "It hedges between billing and orders."),
    )
    agents = _suite(tmp_path, ["judged-good", "judged-bad"])
    code, result, markdown = _run(agents, tmp_path)
    out = capsys.readouterr().out
    assert code == 0  # no threshold, baseline or critical case: the case fails, not the gate
    cases = {c["id"]: c for c in result["agents"][0]["cases"]}
    good = cases["judged-good"]["samples"][0]["assertions"][1]
    bad = cases["judged-bad"]["samples"][0]["assertions"][1]
    assert (good["status"], good["score"], good["reason"]) == (
        "passed",
        0.9,
        "Filed under order_status.",
    )
    assert (bad["status"], bad["score"]) == ("failed", 0.3)
    assert bad["message"] == "judge score 0.30 < 0.70: It hedges between billing and orders."
    assert cases["judged-good"]["passed"] is True and cases["judged-bad"]["passed"] is False
    # The judge's cost is counted apart from the agent's, everywhere.
    judge_cost = good["judge_cost_usd"] + bad["judge_cost_usd"]
    assert judge_cost > 0 and good["judge_tokens"] == 440
    agent = result["agents"][0]
    assert agent["judge_cost_usd"] == pytest.approx(judge_cost)
    assert result["judge_cost_usd"] == pytest.approx(judge_cost)
    agent_cost = sum(s["cost_usd"] for c in agent["cases"] for s in c["samples"])
    assert agent["cost_usd"] == pytest.approx(agent_cost)
    assert f"agent cost ${agent_cost:.6f}, judge cost ${judge_cost:.6f}" in out
    assert f"judge cost ${judge_cost:.6f}" in markdown
    assert (
        "| judged-bad | FAIL | 0/1 | llm_judge: judge score 0.30 < 0.70: It hedges between "
        "billing and orders." in markdown
    )
    assert "| judged-good | pass | 1/1 | llm_judge 0.90: Filed under order_status. |" in markdown
    # The judge saw the rubric, the input and the answer, on the assertion's tier.
    judge_request = scripted.requests[1].body
    prompt = json.loads(judge_request["messages"][-1]["content"])
    assert prompt["rubric"] == RUBRIC and prompt["input"] == "Where is my order A-1001?"
    assert json.loads(prompt["answer"])["category"] == "order_status"
    assert judge_request["response_format"]["type"] == "json_schema"


def test_the_fake_models_own_verdict_is_skipped_offline_with_its_cost_counted(
    scripted: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agents = _suite(tmp_path, ["judged-offline"])
    code, result, markdown = _run(agents, tmp_path)
    capsys.readouterr()
    assert code == 0
    case = result["agents"][0]["cases"][0]
    judged = case["samples"][0]["assertions"][1]
    assert judged["status"] == "skipped"
    assert judged["message"] == "offline fake model cannot judge"
    assert judged["score"] is None
    assert judged["judge_cost_usd"] > 0  # the call was made (and paid) all the same
    assert result["judge_cost_usd"] == pytest.approx(judged["judge_cost_usd"])
    assert case["passed"] is True  # a skipped assertion neither passes nor fails the case
    assert "llm_judge skipped: offline fake model cannot judge" in markdown


def test_a_reference_answer_goes_to_the_judge(
    scripted: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.script(_decision(), _verdict(0.8, "Matches the reference."))
    agents = _suite(tmp_path, ["with-reference"], reference={"category": "order_status"})
    code, _, _ = _run(agents, tmp_path)
    capsys.readouterr()
    assert code == 0
    prompt = json.loads(scripted.requests[1].body["messages"][-1]["content"])
    assert json.loads(prompt["reference"]) == {"category": "order_status"}


def test_judge_calls_go_through_the_gateway_budgeted_apart_from_the_agent(
    scripted: FakeModelServer,
) -> None:
    suite = parse_suite(
        {
            "agent": "triage",
            "cases": [
                {
                    "id": "judged",
                    "input": "Where is my order A-1001?",
                    "assertions": [{"type": "llm_judge", "rubric": RUBRIC, "tier": "fast"}],
                }
            ],
        },
        "inline",
    )
    scripted.script(_decision(), _verdict(0.95, "Right."))
    with eval_targets.in_process_runtime() as (runtime, offline):
        assert offline is False  # the test's own fake model server, scripted
        target = eval_targets.in_process_target(["triage"], runtime)
        results = run_cases(
            plan([suite]), target, concurrency=1, judge=eval_targets.judge_for(runtime)
        )
        usage = runtime.rollups.tenant_usage(eval_targets.EVAL_TENANT, "day")
    judged = results[0].samples[0].assertions[0]
    assert judged.status == "passed"
    assert set(usage["agents"]) == {"triage", judge_module.JUDGE_AGENT}
    judge_usd = float(usage["agents"][judge_module.JUDGE_AGENT]["cost_usd"])
    assert judge_usd == pytest.approx(results[0].judge_cost_usd)
    assert float(usage["agents"]["triage"]["cost_usd"]) == pytest.approx(results[0].cost_usd)


def test_the_layer_knows_the_fake_models_text_prefix() -> None:
    # The judge cannot import infra; this keeps its copy of the marker honest.
    assert judge_module.FAKE_TEXT_PREFIX == TEXT_PREFIX


def test_a_judge_answer_that_is_no_verdict_fails_the_assertion_never_passes(
    scripted: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.script(_decision(), Reply(content="I think it is fine."))
    agents = _suite(tmp_path, ["judged-garbled"])
    code, result, _ = _run(agents, tmp_path)
    capsys.readouterr()
    assert code == 0
    judged = result["agents"][0]["cases"][0]["samples"][0]["assertions"][1]
    assert judged["status"] == "failed"
    assert judged["message"].startswith("the judge call failed: ")
    assert result["agents"][0]["cases"][0]["passed"] is False

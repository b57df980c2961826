"""``stratus eval --api`` against a running local cloud, and against the in-process runtime.

One local cloud (ephemeral ports, its own fake model) serves both targets: the
in-process run points its runtime at the cloud's fake model server, the API run
goes through the cloud's HTTP gateway, agent functions, job queues and workflows.
Every shipped suite gives the same per-case verdicts on both, unplanted (all
pass) and with the same scripted replies planted: a wrong category, a wrong tool
argument, a turn that forgot the first one, a job that is not routed. The same
cases pass and fail, and the gate fails for the same reasons.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import cli
from infra.local.cloud import LocalCloud
from infra.local.fake_model import FakeModelServer, Reply

pytestmark = pytest.mark.xdist_group("local-cloud")


@pytest.fixture(scope="module")
def local(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


@pytest.fixture
def model(local: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModelServer]:
    """The cloud's fake model, which the in-process target uses too."""
    fake = local.fake_model
    assert fake is not None
    for name in ("OPENAI_API_KEY", "STRATUS_OPENAI_API_KEY", "STRATUS_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    fake.reset()
    yield fake
    fake.reset()


def _decision(category: str) -> Reply:
    return Reply(
        content=json.dumps({"category": category, "confidence": 0.9, "summary": "planted"})
    )


def _eval(tmp_path: Path, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"{name}.json"
    code = cli.main(["eval", "--concurrency", "1", "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def _verdicts(result: dict[str, Any]) -> dict[str, Any]:
    return {
        agent["agent"]: {
            "passed": agent["passed"],
            "reasons": agent["reasons"],
            "score": agent["score"],
            "cases": {case["id"]: (case["passed"], case["passes"]) for case in agent["cases"]},
        }
        for agent in result["agents"]
    }


def test_the_api_and_the_in_process_runtime_give_the_same_verdicts(
    local: LocalCloud,
    model: FakeModelServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    facts = local.facts
    assert facts is not None
    triage = ["--agent", "triage", "--tag", "order_status"]
    model.script(*[_decision("billing")] * 3)
    code_local, in_process = _eval(tmp_path, "in-process", *triage)
    model.reset()
    model.script(*[_decision("billing")] * 3)
    api = ["--api", facts.api_url, "--key", facts.demo_tenant_key]
    code_api, over_api = _eval(tmp_path, "api", *triage, *api)
    capsys.readouterr()

    assert code_local == code_api == 1
    assert _verdicts(over_api) == _verdicts(in_process)
    verdict = _verdicts(over_api)["triage"]
    failed = sorted(case for case, (passed, _) in verdict["cases"].items() if not passed)
    assert failed == ["order-status-by-id", "order-tracking-stuck", "order-where-is"]
    assert any("critical case order-where-is failed" in r for r in verdict["reasons"])
    # The API run saw real answers through the gateway: cost and tokens from the body.
    sample = over_api["agents"][0]["cases"][-1]["samples"][0]
    assert sample["cost_usd"] > 0 and sample["tokens"] > 0
    # With nothing planted both pass the gate again (the fake's default answers).
    model.reset()
    assert _eval(tmp_path, "api-clean", *triage, *api)[0] == 0


def _api(local: LocalCloud) -> list[str]:
    facts = local.facts
    assert facts is not None
    return ["--api", facts.api_url, "--key", facts.demo_tenant_key]


def _both(
    tmp_path: Path, model: FakeModelServer, replies: list[Reply], api: list[str], *args: str
) -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
    """The same cases in-process and over the API, each with ``replies`` planted first."""
    model.reset()
    model.script(*replies)
    in_process = _eval(tmp_path, "in-process", *args)
    model.reset()
    model.script(*replies)
    over_api = _eval(tmp_path, "api", *args, *api)
    model.reset()
    return in_process, over_api


def _sample(result: dict[str, Any], case_id: str) -> dict[str, Any]:
    case = next(c for a in result["agents"] for c in a["cases"] if c["id"] == case_id)
    sample: dict[str, Any] = case["samples"][0]
    return sample


def _statuses(sample: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(a["type"], a["status"], a["message"]) for a in sample["assertions"]]


def test_every_shipped_suite_passes_with_the_same_verdicts_in_process_and_over_the_api(
    local: LocalCloud, model: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (code_local, in_process), (code_api, over_api) = _both(tmp_path, model, [], _api(local))
    out = capsys.readouterr().out
    assert code_local == code_api == 0, out
    assert _verdicts(over_api) == _verdicts(in_process)
    shipped = {"order_status", "researcher", "returns", "support", "triage"}
    assert set(_verdicts(over_api)) == shipped
    assert all(v["passed"] and v["score"] == 100.0 for v in _verdicts(over_api).values())
    # Tool calls and their arguments come back in the API's answers ...
    lookup = _sample(over_api, "lookup-in-transit")
    assert lookup["tool_calls"] == [{"name": "lookup_order", "arguments": {"order_id": "A-1001"}}]
    assert lookup["tool_calls"] == _sample(in_process, "lookup-in-transit")["tool_calls"]
    # ... the session's context is read back from the session ...
    multi = _sample(over_api, "refers-back-to-the-order")
    assert _statuses(multi) == _statuses(_sample(in_process, "refers-back-to-the-order"))
    # ... a routed job names its specialist, and the workflow ran its planned steps.
    assert _statuses(_sample(over_api, "job-routes-order")) == _statuses(
        _sample(in_process, "job-routes-order")
    )
    report = _sample(over_api, "report-with-planned-steps")
    assert set(report["answer"]) == {"answer", "confidence", "gaps"}
    assert report["cost_usd"] > 0 and report["tokens"] > 0


def _lookup_suite(tmp_path: Path) -> list[str]:
    evals = tmp_path / "agents" / "order_status" / "evals"
    evals.mkdir(parents=True)
    suite = {
        "agent": "order_status",
        "cases": [
            {
                "id": "looks-up-a-1001",
                "tags": ["critical"],
                "input": "Where is my order A-1001?",
                "assertions": [
                    {
                        "type": "tool_called",
                        "name": "lookup_order",
                        "arguments": {"order_id": "A-1001"},
                    },
                    {"type": "tool_not_called", "name": "cancel_order"},
                ],
            }
        ],
    }
    (evals / "lookups.json").write_text(json.dumps(suite))
    return ["--agents-dir", str(tmp_path / "agents")]


def test_a_planted_wrong_tool_argument_fails_the_same_case_on_both_targets(
    local: LocalCloud, model: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = [
        Reply(tool_calls=[{"name": "lookup_order", "arguments": {"order_id": "A-1002"}}]),
        Reply(content="It was delivered."),
    ]
    agents = _lookup_suite(tmp_path)
    (code_local, in_process), (code_api, over_api) = _both(
        tmp_path, model, planted, _api(local), *agents
    )
    out = capsys.readouterr().out
    assert code_local == code_api == 1
    assert "critical case looks-up-a-1001 failed" in out
    assert _verdicts(over_api) == _verdicts(in_process)
    expected = [
        (
            "tool_called",
            "failed",
            'lookup_order called with [{"order_id": "A-1002"}]; expected {"order_id": "A-1001"}',
        ),
        ("tool_not_called", "passed", "cancel_order was called 0 time(s)"),
    ]
    assert _statuses(_sample(over_api, "looks-up-a-1001")) == expected
    assert _statuses(_sample(in_process, "looks-up-a-1001")) == expected
    # Unplanted, the fake model looks the order up with the id in the message: both pass.
    (code_local, _), (code_api, _) = _both(tmp_path, model, [], _api(local), *agents)
    capsys.readouterr()
    assert code_local == code_api == 0


def _turns_suite(tmp_path: Path) -> list[str]:
    evals = tmp_path / "agents" / "support" / "evals"
    evals.mkdir(parents=True)
    suite = {
        "agent": "support",
        "cases": [
            {
                "id": "carries-the-first-turn",
                "tags": ["critical"],
                "input": ["My order is A-1001.", "When does it come?"],
                "assertions": [
                    {"type": "context_contains", "text": "My order is A-1001."},
                    {"type": "context_contains", "text": "Noted: order A-1001."},
                    {"type": "context_contains", "text": "When does it come?"},
                    {"type": "text_contains", "text": "Tomorrow"},
                ],
            }
        ],
    }
    (evals / "turns.json").write_text(json.dumps(suite))
    return ["--agents-dir", str(tmp_path / "agents")]


def test_a_session_case_sees_the_same_context_over_the_session_routes(
    local: LocalCloud, model: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = [Reply(content="Noted: order A-1001."), Reply(content="Tomorrow, by DHL.")]
    agents = _turns_suite(tmp_path)
    (code_local, in_process), (code_api, over_api) = _both(
        tmp_path, model, planted, _api(local), *agents
    )
    capsys.readouterr()
    assert code_local == code_api == 1  # the last turn's own message is not its context
    assert _verdicts(over_api) == _verdicts(in_process)
    sample = _sample(over_api, "carries-the-first-turn")
    assert _statuses(sample) == _statuses(_sample(in_process, "carries-the-first-turn"))
    assert [status for _, status, _ in _statuses(sample)] == [
        "passed",
        "passed",
        "failed",
        "passed",
    ]
    assert sample["answer"] == "Tomorrow, by DHL."


def test_a_planted_routing_regression_fails_the_same_job_cases_on_both_targets(
    local: LocalCloud, model: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every job decision says billing: nothing is routed, so the routed cases fail.
    planted = [_decision("billing")] * 4
    args = ["--agent", "triage", "--tag", "job"]
    (code_local, in_process), (code_api, over_api) = _both(
        tmp_path, model, planted, _api(local), *args
    )
    out = capsys.readouterr().out
    assert code_local == code_api == 1
    assert _verdicts(over_api) == _verdicts(in_process)
    verdict = _verdicts(over_api)["triage"]
    failed = sorted(case for case, (passed, _) in verdict["cases"].items() if not passed)
    assert failed == ["job-routes-order", "job-routes-return"]
    assert "critical case job-routes-order failed" in out
    routed = [a for a in _statuses(_sample(over_api, "job-routes-return")) if a[0] == "routed_to"]
    assert routed == [("routed_to", "failed", "routed to no agent, expected returns")]

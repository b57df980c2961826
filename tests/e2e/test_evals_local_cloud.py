"""``stratus eval --api`` against a running local cloud, and against the in-process runtime.

One local cloud (ephemeral ports, its own fake model) serves both targets: the
in-process run points its runtime at the cloud's fake model server, the API run
goes through the cloud's HTTP gateway and agent functions. The same scripted
replies (a planted wrong category) give the same verdicts on both: the same
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
from tests.e2e.helpers import offline_environ

pytestmark = pytest.mark.xdist_group("local-cloud")


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCloud]:
    with LocalCloud(
        api_port=0,
        aws_port=0,
        state_file=None,
        log_sink=lambda line: None,
        environ=offline_environ(),
    ) as cloud:
        yield cloud


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


def test_tool_assertions_fail_over_the_api_as_not_observable(
    local: LocalCloud, model: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = local.facts
    assert facts is not None
    code, result = _eval(
        tmp_path,
        "tools",
        "--agent",
        "order_status",
        "--api",
        facts.api_url,
        "--key",
        facts.demo_tenant_key,
    )
    out = capsys.readouterr().out
    assert code == 1  # critical cases assert a tool call: never a silent pass
    cases = {case["id"]: case for case in result["agents"][0]["cases"]}
    lookup = cases["lookup-in-transit"]
    assertions = {a["type"]: a for a in lookup["samples"][0]["assertions"]}
    assert assertions["tool_called"] == {
        "type": "tool_called",
        "status": "failed",
        "message": "lookup_order: tool calls are not observable over the API",
    }
    # The rest of the case was checked on the API's real answer (the demo tenant's order).
    assert assertions["text_contains"]["status"] == "passed"
    assert "critical case lookup-in-transit failed" in out


def test_a_session_case_runs_over_the_session_routes(
    local: LocalCloud, model: FakeModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = local.facts
    assert facts is not None
    api = ["--api", facts.api_url, "--key", facts.demo_tenant_key]
    code, result = _eval(tmp_path, "support", "--agent", "support", *api)
    capsys.readouterr()
    assert code == 1  # its critical case asserts the tool call and the context: not observable
    cases = {case["id"]: case for case in result["agents"][0]["cases"]}
    sample = cases["refers-back-to-the-order"]["samples"][0]
    assert sample["error"] is None and sample["answer"].startswith("[fake model]")
    statuses = {a["type"]: a for a in sample["assertions"]}
    assert statuses["context_contains"]["message"] == (
        "the model's context is not observable on this target"
    )
    assert statuses["cost_at_most"]["status"] == "passed" and sample["tokens"] > 0
    # Text assertions on the last turn's answer are checked over the API too.
    assert cases["other-tenants-order-invisible"]["passed"] is True

"""``stratus eval --stack`` / ``--version`` against a running local cloud, with metrics.

The local cloud's AWS front is the AWS endpoint (``AWS_ENDPOINT_URL``): it answers
Lambda ``Invoke`` itself (it runs every published name as ``$LATEST``: it ignores
the ``Qualifier``) and forwards CloudFormation and CloudWatch to its moto. A stack
``Stratus-e2e`` is created there with the outputs a deployed stage has (``ApiUrl``)
and the agent function's name, so ``--stack`` resolves the API and the function the
way it does on AWS. ``EvalScore`` and ``EvalPassRate`` are read back from moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.agents import load_agent
from infra import cli
from infra.local.cloud import LocalCloud
from infra.local.demo import http

pytestmark = pytest.mark.xdist_group("local-cloud")

STACK = "Stratus-e2e"


@pytest.fixture(scope="module")
def local(shared_cloud: LocalCloud) -> Iterator[LocalCloud]:
    cloud = shared_cloud
    facts = cloud.facts
    assert facts is not None
    template = {
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "ApiUrl": {"Value": facts.api_url},
            "AgentFunctionTriage": {"Value": facts.functions["agent:triage"]},
        },
    }
    cloudformation = _client("cloudformation", cloud)
    cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    yield cloud
    cloudformation.delete_stack(StackName=STACK)


def _client(service: str, local: LocalCloud) -> Any:
    facts = local.facts
    assert facts is not None
    factory: Any = boto3.client  # the service name is a variable: no overload to pick
    return factory(
        service,
        endpoint_url=facts.aws_endpoint_url,
        region_name=facts.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def aws(local: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> LocalCloud:
    """The eval process's AWS is the local cloud's front; the model stays offline."""
    facts = local.facts
    assert facts is not None
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "STRATUS_OPENAI_API_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("STRATUS_OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("STRATUS_API_KEY", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", facts.aws_endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", facts.region)
    return local


def _suite(tmp_path: Path) -> Path:
    """Two triage cases, one a list-free critical one: what a pre-traffic hook would run."""
    path = tmp_path / "release-gate.json"
    cases = [
        {
            "id": "gate-order",
            "tags": ["critical"],
            "input": "Where is my order A-1001? It was due yesterday.",
            "assertions": [
                {"type": "field_equals", "path": "category", "value": "order_status"},
                {"type": "output_schema"},
                {"type": "cost_at_most", "usd": 0.01},
            ],
        },
        {
            "id": "gate-billing",
            "input": "I was charged twice for my invoice.",
            "assertions": [{"type": "output_schema"}, {"type": "tool_not_called", "name": "x"}],
        },
    ]
    path.write_text(json.dumps({"agent": "triage", "threshold": 90, "cases": cases}))
    return path


def _eval(tmp_path: Path, name: str, *extra: str) -> tuple[int, dict[str, Any] | None]:
    out = tmp_path / f"{name}.json"
    code = cli.main(["eval", "--concurrency", "1", "--json", str(out), *extra])
    return code, json.loads(out.read_text()) if out.exists() else None


def _metric(local: LocalCloud, name: str, release: str) -> list[float]:
    now = datetime.now(UTC)
    points = _client("cloudwatch", local).get_metric_statistics(
        Namespace="Stratus",
        MetricName=name,
        Dimensions=[{"Name": "agent", "Value": "triage"}, {"Name": "release", "Value": release}],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1),
        Period=3600,
        Statistics=["Maximum", "SampleCount"],
    )["Datapoints"]
    return [float(p["Maximum"]) for p in points]


def test_version_runs_the_cases_through_lambda_invoke_and_publishes_metrics(
    aws: LocalCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = aws.facts
    assert facts is not None
    function = facts.functions["agent:triage"]
    suite = _suite(tmp_path)
    code, result = _eval(
        tmp_path,
        "version",
        "--suite",
        str(suite),
        "--version",
        "$LATEST",
        "--function",
        function,
        "--tenant",
        facts.demo_tenant_id,
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert result is not None
    (verdict,) = result["agents"]
    # The release id the function serves (its answers' agent.release), as the API reports it.
    served = http(
        "POST",
        f"{facts.api_url}/v1/agents/triage/invoke",
        {"input": "Where is my order A-1001?"},
        {"Authorization": f"Bearer {facts.demo_tenant_key}"},
    )
    release = served.body["agent"]["release"]
    assert release.startswith("r-") and release != load_agent("triage").version
    assert verdict["release"] == release  # from the answers' agent.release
    assert verdict["score"] == 100.0 and verdict["pass_rate"] == 1.0
    assert any("outside the agent's evals dir" in note for note in verdict["notes"])
    assert verdict["baseline_score"] is None  # --suite outside evals/: no regression check
    sample = verdict["cases"][0]["samples"][0]
    assert sample["answer"]["category"] == "order_status" and sample["cost_usd"] > 0
    assert f"against function version(s) {function}:$LATEST" in err
    assert "metrics EvalScore, EvalPassRate published for triage@" in err
    # Metrics are on by default with --version: read back from the cloud's CloudWatch.
    assert 100.0 in _metric(aws, "EvalScore", release)
    assert 1.0 in _metric(aws, "EvalPassRate", release)


def test_stack_resolves_the_api_from_its_outputs_and_needs_a_key(
    aws: LocalCloud,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    facts = aws.facts
    assert facts is not None
    suite = ["--suite", str(_suite(tmp_path))]
    code, _ = _eval(tmp_path, "no-key", *suite, "--stack", STACK)
    err = capsys.readouterr().err
    assert code == 2
    assert f"--stack {STACK}: no API key; pass --key KEY or set STRATUS_API_KEY" in err

    code, _ = _eval(tmp_path, "missing", *suite, "--stack", "Stratus-nowhere", "--key", "k")
    assert code == 2 and "--stack Stratus-nowhere:" in capsys.readouterr().err

    monkeypatch.setenv("STRATUS_API_KEY", facts.demo_tenant_key)
    code, result = _eval(tmp_path, "stack", *suite, "--stack", STACK, "--no-metrics")
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert result is not None and result["agents"][0]["score"] == 100.0
    assert f"against stack {STACK} at {facts.api_url}" in err
    assert "metrics" not in err  # --no-metrics

    # --stack with --version: the agent's function from the stack (its output here).
    code, result = _eval(
        tmp_path,
        "stack-version",
        *suite,
        "--stack",
        STACK,
        "--version",
        "$LATEST",
        "--tenant",
        facts.demo_tenant_id,
        "--no-metrics",
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"{facts.functions['agent:triage']}:$LATEST" in err


def test_version_options_that_do_not_fit_exit_2(
    aws: LocalCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _eval(tmp_path, "a", "--version", "3")[0] == 2
    assert "--version needs --stack NAME (or --stage S) or --function NAME" in (
        capsys.readouterr().err
    )
    assert _eval(tmp_path, "b", "--function", "f")[0] == 2
    assert "--function needs --version V" in capsys.readouterr().err
    assert _eval(tmp_path, "c", "--version", "3", "--function", "f")[0] == 2
    assert "--function names one function: choose one agent with --agent" in (
        capsys.readouterr().err
    )


def test_the_judge_runs_in_this_process_while_the_cases_run_on_the_version(
    aws: LocalCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = aws.facts
    assert facts is not None
    path = tmp_path / "judged.json"
    case = {
        "id": "judged-on-version",
        "input": "Where is my order A-1001?",
        "assertions": [
            {"type": "field_equals", "path": "category", "value": "order_status"},
            {"type": "llm_judge", "rubric": "Files it under order_status.", "tier": "fast"},
        ],
    }
    path.write_text(json.dumps({"agent": "triage", "cases": [case]}))
    function = facts.functions["agent:triage"]
    code, result = _eval(
        tmp_path,
        "judged",
        *("--suite", str(path), "--version", "$LATEST", "--function", function),
        *("--tenant", facts.demo_tenant_id, "--no-metrics"),
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert result is not None
    sample = result["agents"][0]["cases"][0]["samples"][0]
    field, judged = sample["assertions"]
    assert field["status"] == "passed" and sample["cost_usd"] > 0  # the version answered
    # The judge is this process's (its own offline fake model): skipped, its cost apart.
    assert (judged["status"], judged["message"]) == ("skipped", "offline fake model cannot judge")
    assert judged["judge_cost_usd"] > 0 and result["judge_cost_usd"] == judged["judge_cost_usd"]
    assert "judge cost $" in out

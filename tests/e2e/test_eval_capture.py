"""``stratus eval capture`` over a running local cloud: stored answers -> a suite that passes.

One local cloud (ephemeral ports, its own fake model) for the module. The tests
drive jobs and session turns over HTTP as a client would, capture them with the
command, load the file as ``stratus eval`` does, and run it with ``stratus eval
--suite`` over the API and in-process on the same fake model: every captured
case passes as written. Older answers (items written with an old timestamp,
as a job from three days ago would be) are left out by ``--since``; another
tenant's by ``--tenant``; ``--sample`` bounds the count; neither the tenant id
nor its key is ever in the file; a stale local cloud and ``--stack`` are covered
too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra import cli, eval_capture
from infra.local.cloud import LocalCloud
from infra.local.demo import http
from infra.local.facts import free_port
from stratus.evals.models import TextContains, load_suite
from stratus.tenants import TenantStore
from tests.e2e.helpers import offline_environ, wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")

THREE_DAYS_AGO = datetime.now(UTC) - timedelta(days=3)


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


@pytest.fixture(scope="module")
def facts_file(local: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cloud's facts, where ``stratus dev`` would write them (``--facts`` names it)."""
    assert local.facts is not None
    path = tmp_path_factory.mktemp("stratus") / "local.json"
    path.write_text(local.facts.to_json(), encoding="utf-8")
    return path


def _auth(local: LocalCloud) -> dict[str, str]:
    assert local.facts is not None
    return {"Authorization": f"Bearer {local.facts.demo_tenant_key}"}


def _job(
    local: LocalCloud, agent: str, text: Any, *, route: bool = False, key: str | None = None
) -> dict[str, Any]:
    assert local.facts is not None
    api = local.facts.api_url
    auth = {"Authorization": f"Bearer {key}"} if key else _auth(local)
    body = {"agent": agent, "input": text, "route": route}
    reply = http("POST", f"{api}/v1/jobs", body, auth)
    assert reply.status == 202, reply.body

    def finished() -> Any:
        job = http("GET", f"{api}/v1/jobs/{reply.body['job_id']}", None, auth).body
        return job if job["status"] in {"succeeded", "failed"} else None

    job = wait_for(finished, timeout=60)
    assert job["status"] == "succeeded", job
    return dict(job)


def _session(local: LocalCloud, *messages: str) -> str:
    assert local.facts is not None
    base = f"{local.facts.api_url}/v1/agents/support/sessions"
    created = http("POST", base, {"metadata": {"channel": "chat"}}, _auth(local))
    assert created.status == 201, created.body
    for text in messages:
        reply = http(
            "POST", f"{base}/{created.body['session_id']}/messages", {"message": text}, _auth(local)
        )
        assert reply.status == 200, reply.body
    return str(created.body["session_id"])


def _dynamodb(local: LocalCloud) -> Any:
    assert local.facts is not None
    return boto3.resource(
        "dynamodb",
        endpoint_url=local.facts.aws_endpoint_url,
        region_name=local.facts.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


@pytest.fixture(scope="module")
def traffic(local: LocalCloud) -> dict[str, Any]:
    """Answers as clients leave them: triage jobs (routed and not), a support session, and
    stored items as an older job and another tenant's job would be."""
    assert local.facts is not None
    jobs = {
        "routed": _job(local, "triage", "Where is my order A-1001? It is late.", route=True),
        "returned": _job(local, "triage", "I want to return my rain jacket.", route=True),
        "billing": _job(local, "triage", "Why was my card charged twice?", route=True),
        "plain": _job(local, "triage", "My invoice shows the wrong billing address."),
    }
    session_id = _session(local, "Where is my order A-1001?", "And which carrier has it?")
    table = _dynamodb(local).Table(local.facts.tables["jobs"])
    stored = table.get_item(Key={"job_id": jobs["plain"]["job_id"], "sk": "JOB"})["Item"]
    old_stamp = THREE_DAYS_AGO.isoformat(timespec="milliseconds")
    old = {**stored, "job_id": "job_old" + uuid.uuid4().hex[:8]}
    old.update(created_at=old_stamp, updated_at=old_stamp)
    table.put_item(Item=old)
    # Another tenant of the same stage, with its own key.
    tenants = boto3.client(
        "dynamodb",
        endpoint_url=local.facts.aws_endpoint_url,
        region_name=local.facts.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    tenant, key = TenantStore(local.facts.tables["tenants"], tenants).create("other")
    other = _job(local, "triage", "Please resend my billing invoice.", key=key)
    return {
        "jobs": jobs,
        "session": session_id,
        "old": old["job_id"],
        "other": other["job_id"],
        "other_tenant": tenant.tenant_id,
    }


def _capture(facts_file: Path, *argv: str) -> int:
    return eval_capture.main(["--facts", str(facts_file), *argv])


def _ids(path: Path) -> list[str]:
    return [case.id for case in load_suite(path).cases]


def _eval_suite(tmp_path: Path, suite: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"run-{uuid.uuid4().hex[:6]}.json"
    code = cli.main(
        ["eval", "--suite", str(suite), "--concurrency", "1", "--json", str(out), *extra]
    )
    result = json.loads(out.read_text())
    result["exit_code"] = code
    return result


@pytest.fixture
def model(local: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The in-process eval runs on the cloud's own fake model: the same model as captured."""
    assert local.fake_model is not None
    for name in ("OPENAI_API_KEY", "STRATUS_OPENAI_API_KEY", "STRATUS_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", local.fake_model.url)
    local.fake_model.reset()
    yield
    local.fake_model.reset()


def _verdicts(result: dict[str, Any]) -> dict[str, bool]:
    return {case["id"]: case["passed"] for agent in result["agents"] for case in agent["cases"]}


def test_captured_triage_jobs_make_a_suite_that_passes_as_written(
    local: LocalCloud,
    facts_file: Path,
    traffic: dict[str, Any],
    model: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert local.facts is not None
    out = tmp_path / "triage-captured.json"
    argv = ["eval", "capture", "--agent", "triage", "--since", "1d", "--out", str(out)]
    assert cli.main([*argv, "--facts", str(facts_file)]) == 0
    assert "5 candidate cases of triage" in capsys.readouterr().out

    text = out.read_text()
    suite = load_suite(out)  # what stratus eval loads: valid as written
    assert suite.agent == "triage" and "$schema" not in json.loads(text)
    assert local.facts.demo_tenant_id not in text and traffic["other_tenant"] not in text
    assert local.facts.demo_tenant_key not in text and "sk-stratus-" not in text
    cases = {case.id: case for case in suite.cases}
    assert len(cases) == 5 and all(case.tags == ["captured"] for case in suite.cases)
    jobs = traffic["jobs"]
    by_input = {case.input: case for case in suite.cases}
    routed = by_input["Where is my order A-1001? It is late."]
    assert routed.kind == "job" and routed.route is True
    assert routed.reference == jobs["routed"]["result"]
    assertions = [a.model_dump(by_alias=True, exclude_none=True) for a in routed.assertions]
    assert {"type": "routed_to", "agent": "order_status"} in assertions
    assert {"type": "field_equals", "path": "category", "value": "order_status"} in assertions
    assert {"type": "output_schema"} in assertions
    returned = by_input["I want to return my rain jacket."]
    assert {"type": "routed_to", "agent": "returns"} in [
        a.model_dump(exclude_none=True) for a in returned.assertions
    ]
    billing = by_input["Why was my card charged twice?"]
    assert {"type": "routed_to", "agent": None} in [a.model_dump() for a in billing.assertions]
    plain = by_input["My invoice shows the wrong billing address."]
    assert plain.route is False and plain.kind == "job"
    assert any(a.type == "cost_at_most" for a in plain.assertions)
    assert jobs["plain"]["job_id"] in plain.description and "local cloud" in plain.description
    # The older job and the eval runner's own jobs are not there.
    assert traffic["old"] not in text

    over_api = _eval_suite(
        tmp_path, out, "--api", local.facts.api_url, "--key", local.facts.demo_tenant_key
    )
    in_process = _eval_suite(tmp_path, out)
    capsys.readouterr()
    assert _verdicts(over_api) == _verdicts(in_process) == {case.id: True for case in suite.cases}
    assert over_api["exit_code"] == in_process["exit_code"] == 0
    # The eval run's own jobs (metadata source=eval) are never captured back.
    again = tmp_path / "again.json"
    assert _capture(facts_file, "--agent", "triage", "--out", str(again)) == 0
    assert sorted(_ids(again)) == sorted(cases)


def test_captured_session_turns_replay_the_conversation(
    local: LocalCloud,
    facts_file: Path,
    traffic: dict[str, Any],
    model: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert local.facts is not None
    out = tmp_path / "support-captured.json"
    assert _capture(facts_file, "--agent", "support", "--out", str(out)) == 0
    suite = load_suite(out)
    assert [case.input for case in suite.cases] == [
        ["Where is my order A-1001?", "And which carrier has it?"],
        ["Where is my order A-1001?"],
    ]  # newest first
    assert all(case.id.startswith("captured-session-") for case in suite.cases)
    assert traffic["session"] in suite.cases[0].description
    assert "turn 2 of 2 of session" in suite.cases[0].description
    for case in suite.cases:
        assert isinstance(case.reference, str) and case.reference
        phrase = next(a for a in case.assertions if isinstance(a, TextContains))
        assert phrase.text in case.reference
    result = _eval_suite(
        tmp_path, out, "--api", local.facts.api_url, "--key", local.facts.demo_tenant_key
    )
    capsys.readouterr()
    assert _verdicts(result) == {case.id: True for case in suite.cases}


def test_since_tenant_and_sample_choose_what_is_captured(
    local: LocalCloud,
    facts_file: Path,
    traffic: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert local.facts is not None
    week = tmp_path / "week.json"
    assert _capture(facts_file, "--agent", "triage", "--since", "7d", "--out", str(week)) == 0
    day = tmp_path / "day.json"
    assert _capture(facts_file, "--agent", "triage", "--since", "1d", "--out", str(day)) == 0
    stamp = (THREE_DAYS_AGO - timedelta(hours=1)).isoformat(timespec="seconds")
    iso = tmp_path / "iso.json"
    assert _capture(facts_file, "--agent", "triage", "--since", stamp, "--out", str(iso)) == 0
    # The three-day-old job is in the week and after the ISO time, not in the last day.
    assert len(_ids(week)) == len(_ids(iso)) == len(_ids(day)) + 1
    assert traffic["old"] in week.read_text() and traffic["old"] not in day.read_text()
    # --tenant keeps one tenant's answers (and still never writes its id).
    mine = tmp_path / "mine.json"
    tenant = local.facts.demo_tenant_id
    assert _capture(facts_file, "--agent", "triage", "--tenant", tenant, "--out", str(mine)) == 0
    assert len(_ids(mine)) == len(_ids(day)) - 1 and traffic["other"] not in mine.read_text()
    assert tenant not in mine.read_text()
    # --sample bounds the count; the same --seed picks the same cases.
    picks = []
    for name in ("a", "b"):
        path = tmp_path / f"sample-{name}.json"
        code = _capture(
            facts_file, "--agent", "triage", "--sample", "2", "--seed", "3", "--out", str(path)
        )
        assert code == 0
        picks.append(_ids(path))
    assert len(picks[0]) == 2 and picks[0] == picks[1]
    # An existing file is kept without --force.
    assert _capture(facts_file, "--agent", "triage", "--out", str(day)) == 2
    assert "pass --force" in capsys.readouterr().err
    # No answers of the agent (no researcher job ran here): exit 1, nothing written.
    none = tmp_path / "none.json"
    assert _capture(facts_file, "--agent", "researcher", "--out", str(none)) == 1
    assert "no answers of researcher" in capsys.readouterr().err and not none.exists()


def test_written_under_the_agents_evals_dir_it_names_the_schema(
    facts_file: Path, traffic: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = tmp_path / "functions" / "agents"
    monkeypatch.setattr(eval_capture, "AGENTS_DIR", agents)
    monkeypatch.setattr(eval_capture, "SCHEMA_FILE", tmp_path / "evals" / "schema.json")
    out = agents / "triage" / "evals" / "captured.json"
    assert _capture(facts_file, "--agent", "triage", "--out", str(out)) == 0
    assert json.loads(out.read_text())["$schema"] == "../../../../evals/schema.json"
    # Captured again beside it: the cases already in a suite of the agent are left out.
    twice = agents / "triage" / "evals" / "captured-2.json"
    assert _capture(facts_file, "--agent", "triage", "--out", str(twice)) == 1
    assert not twice.exists()


def test_a_stale_facts_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "local.json"
    dead = f"http://127.0.0.1:{free_port()}"
    stale.write_text(
        json.dumps(
            {
                "aws_endpoint_url": dead,
                "region": "us-east-1",
                "tables": {"jobs": "j", "sessions": "s"},
            }
        )
    )
    out = tmp_path / "c.json"
    assert _capture(stale, "--agent", "triage", "--out", str(out)) == 2
    assert f"no local cloud answers at {dead}" in capsys.readouterr().err
    assert not out.exists()


def test_stack_reads_a_deployed_stages_tables(
    local: LocalCloud,
    traffic: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stack whose tables have the CDK app's logical ids, on the local cloud's AWS endpoint."""
    assert local.facts is not None
    for name, value in {
        "AWS_ENDPOINT_URL": local.facts.aws_endpoint_url,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)

    def table(pk: str) -> dict[str, Any]:
        keys = [
            {"AttributeName": pk, "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        attributes = [{"AttributeName": n, "AttributeType": "S"} for n in (pk, "sk")]
        return {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "KeySchema": keys,
                "AttributeDefinitions": attributes,
                "BillingMode": "PAY_PER_REQUEST",
            },
        }

    stack = f"Stratus-capture-{uuid.uuid4().hex[:6]}"
    template = {
        "Resources": {"TablesJobsAB12CD34": table("job_id"), "TablesSessions0F1E2D3C": table("sid")}
    }
    region = local.facts.region
    cloudformation = boto3.client("cloudformation", region_name=region)
    cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    names = eval_capture.stack_tables(cloudformation, stack)
    source = _dynamodb(local).Table(local.facts.tables["jobs"])
    job = source.get_item(Key={"job_id": traffic["jobs"]["plain"]["job_id"], "sk": "JOB"})["Item"]
    _dynamodb(local).Table(names["jobs"]).put_item(Item=job)

    out = tmp_path / "stack.json"
    argv = ["--agent", "triage", "--stack", stack, "--region", region, "--out", str(out)]
    assert eval_capture.main(argv) == 0
    suite = load_suite(out)
    assert [case.input for case in suite.cases] == [json.loads(job["input"])]
    assert f"stack {stack}" in suite.cases[0].description
    elsewhere = str(tmp_path / "missing.json")
    missing = eval_capture.main(["--agent", "triage", "--stack", "NoSuchStack", "--out", elsewhere])
    assert missing == 2 and "--stack NoSuchStack" in capsys.readouterr().err


def test_a_workflow_job_is_captured_with_its_report_schema_and_steps(
    local: LocalCloud,
    facts_file: Path,
    model: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert local.facts is not None
    job = _job(local, "researcher", "Which carrier is fastest for shoes?")
    out = tmp_path / "researcher.json"
    assert _capture(facts_file, "--agent", "researcher", "--out", str(out)) == 0
    (case,) = load_suite(out).cases
    assert case.kind == "job" and case.reference == job["result"]
    dumped = {a.type: a.model_dump(by_alias=True) for a in case.assertions}
    # A workflow's answer is its reviewer's report, not the planner's schema: named explicitly.
    assert dumped["output_schema"]["schema"]["title"] == "ResearchReport"
    assert dumped["job_steps"]["include"] == [s["name"] for s in job["steps"]]
    assert {"plan", "review"} <= set(dumped["job_steps"]["include"])
    api = ["--api", local.facts.api_url, "--key", local.facts.demo_tenant_key]
    over_api = _eval_suite(tmp_path, out, *api)
    in_process = _eval_suite(tmp_path, out)
    capsys.readouterr()
    assert _verdicts(over_api) == _verdicts(in_process) == {case.id: True}

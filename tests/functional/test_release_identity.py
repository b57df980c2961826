"""The release an answer came from: on health, answers, jobs, session turns, logs, metrics.

The real handlers in-process against moto and the fake model over real HTTP. The
task metrics are read from what the function prints (EMF on stdout, as CloudWatch
Logs reads it).
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from functions.agents import load_agent
from functions.handlers import api
from infra.local.fake_model import FakeModelServer
from stratus import composition
from stratus.config import Settings
from stratus.observability import logger
from stratus.releases import release_of
from tests.functional.test_jobs import as_event, drain, jobs, serve  # noqa: F401 - fixture
from tests.support import FakeLambdaContext, api_event, call, json_lines, load_event

RELEASE_ID = r"^r-[0-9a-f]{12}$"


def emf_documents(text: str) -> list[dict[str, Any]]:
    """The EMF documents among the printed lines."""
    return [doc for doc in json_lines(text) if "_aws" in doc]


def task_metrics(text: str) -> list[dict[str, Any]]:
    """The documents that carry ``Tasks``, with their dimension sets."""
    found = []
    for doc in emf_documents(text):
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        names = {m["Name"] for m in directive["Metrics"]}
        if "Tasks" in names:
            found.append({"dimensions": directive["Dimensions"], "names": names, **doc})
    return found


def test_health_names_the_release_and_prompt_version(
    serve_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_agent("triage")
    reply = call(api.lambda_handler, load_event("api/health.json"))
    assert reply.status == 200, reply.body
    expected = release_of(load_agent("triage"), Settings())
    assert reply.body["release"] == expected and reply.body["prompt_version"] == "v1"

    # The stack's STRATUS_RELEASE wins over the hash (a process computes it once).
    monkeypatch.setenv("STRATUS_RELEASE", "r-0123456789ab")
    serve_agent("triage")
    reply = call(api.lambda_handler, load_event("api/health.json"))
    assert reply.body["release"] == "r-0123456789ab"

    serve_agent("")  # the platform function serves no agent
    reply = call(api.lambda_handler, load_event("api/health.json"))
    assert reply.body["release"] is None and reply.body["prompt_version"] is None


def test_an_answer_its_log_lines_and_its_task_metrics_carry_the_release(
    serve_agent: Any, fake_model: FakeModelServer, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_agent("triage")
    release = composition.current().release_for(load_agent("triage"))
    assert release == release_of(load_agent("triage"), Settings())
    capsys.readouterr()
    reply = call(api.lambda_handler, api_event("triage", body={"input": "Where is A-1001?"}))
    assert reply.status == 200, reply.body
    assert reply.body["agent"]["release"] == release
    assert reply.body["agent"]["prompt_version"] == "v1"
    keys = logger.get_current_keys()
    assert (keys.get("release"), keys.get("prompt_version")) == (release, "v1")

    (task,) = task_metrics(capsys.readouterr().out)
    assert task["dimensions"] == [["agent", "release"]]  # exactly these: the alarms' metric
    assert task["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Stratus"
    assert (task["agent"], task["release"]) == ("triage", release)
    assert task["Tasks"] == [1.0] and task["TaskErrors"] == [0.0]
    assert task["CostMicroUSD"] == [pytest.approx(reply.body["cost_usd"] * 10**6)]

    # A refused request (413) is not a task of the release: no task metrics.
    too_long = {"input": "x" * (load_agent("triage").limits.max_input_chars + 1)}
    assert call(api.lambda_handler, api_event("triage", body=too_long)).status == 413
    assert task_metrics(capsys.readouterr().out) == []


def test_a_failed_answer_is_a_task_error_of_its_release(
    serve_agent: Any,
    fake_model: FakeModelServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra.local.fake_model import Fault

    monkeypatch.setenv("STRATUS_MODEL_BACKOFF_BASE_S", "0")
    serve_agent("triage")
    release = composition.current().release_for(load_agent("triage"))
    fake_model.inject(Fault(status=500, times=-1))
    capsys.readouterr()
    reply = call(api.lambda_handler, api_event("triage", body={"input": "Where is A-1001?"}))
    assert reply.status >= 500, reply.body
    (task,) = task_metrics(capsys.readouterr().out)
    assert (task["release"], task["Tasks"], task["TaskErrors"]) == (release, [1.0], [1.0])
    assert "CostMicroUSD" not in task["names"]


def test_a_job_records_the_release_that_ran_it(
    jobs: dict[str, Any],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    fake_model: FakeModelServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from functions.handlers import worker

    serve(monkeypatch, "")
    body = {"agent": "triage", "input": "Where is my order A-1001?"}
    submitted = call(
        api.lambda_handler, api_event(None, path="/v1/jobs", body=body, tenant_id="tenant-a")
    )
    assert submitted.status == 202, submitted.body
    job_id = submitted.body["job_id"]
    queued = call(
        api.lambda_handler,
        api_event(None, path=f"/v1/jobs/{job_id}", method="GET", tenant_id="tenant-a"),
    )
    assert queued.body["release"] is None and queued.body["prompt_version"] is None

    monkeypatch.setenv("STRATUS_RELEASE", "r-00000000000a")
    serve(monkeypatch, "triage")
    capsys.readouterr()
    messages = drain(jobs, jobs["queues"]["triage"])
    assert worker.lambda_handler(as_event(jobs, messages), FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    (task,) = task_metrics(capsys.readouterr().out)
    assert (task["agent"], task["release"], task["TaskErrors"]) == ("triage", "r-00000000000a", [0])

    monkeypatch.delenv("STRATUS_RELEASE")
    serve(monkeypatch, "")
    got = call(
        api.lambda_handler,
        api_event(None, path=f"/v1/jobs/{job_id}", method="GET", tenant_id="tenant-a"),
    )
    assert got.status == 200, got.body
    assert got.body["status"] == "succeeded"
    assert (got.body["release"], got.body["prompt_version"]) == ("r-00000000000a", "v1")
    assert task["CostMicroUSD"] == [pytest.approx(got.body["cost_usd"] * 10**6)]


def test_a_session_turn_answers_and_stores_its_release(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    from infra.local import moto_atomic

    moto_atomic.install()
    try:
        serve_agent("support")
        release = release_of(load_agent("support"), Settings())
        base = "/v1/agents/support/sessions"
        created = call(api.lambda_handler, api_event(None, path=base, body={}))
        assert created.status == 201, created.body
        sid = created.body["session_id"]
        turn = call(
            api.lambda_handler,
            api_event(None, path=f"{base}/{sid}/messages", body={"message": "Hello"}),
        )
        assert turn.status == 200, turn.body
        assert (turn.body["release"], turn.body["prompt_version"]) == (release, "v1")

        items = (
            boto3.resource("dynamodb")
            .Table(cloud["tables"]["sessions"])
            .query(
                KeyConditionExpression="sid = :p AND begins_with(sk, :m)",
                ExpressionAttributeValues={":p": f"tenant-a#support#{sid}", ":m": "M#"},
            )["Items"]
        )
        by_role = {item["role"]: item for item in items}
        assert by_role["assistant"]["release"] == release  # on the turn's own write
        assert "release" not in by_role["user"]

        view = call(api.lambda_handler, api_event(None, path=f"{base}/{sid}", method="GET"))
        assert view.status == 200, view.body
        roles = {m["role"]: m for m in view.body["messages"]}
        assert roles["assistant"]["release"] == release and "release" not in roles["user"]
    finally:
        moto_atomic.uninstall()

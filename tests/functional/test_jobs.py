"""Jobs against moto, in-process: the jobs API, the ingest contract, the worker's idempotency."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.agents import load_all
from infra.local.fake_model import FakeModelServer
from stratus import composition
from stratus.agents import CallScope
from stratus.aws import AwsClients
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.errors import JobBudgetExceeded
from stratus.jobs import (
    DynamoJobStore,
    JobRequest,
    ProducerMessage,
    check_budget,
    job_id_for,
    producer_contract_schema,
    sign,
    verify,
)
from stratus.tenants import TenantStore
from tests.support import EVENTS, FakeLambdaContext, api_event, call, load_event


def install_runtime() -> Runtime:
    """A fresh composition root from the current environment, as a new process builds it."""
    runtime = Runtime(Settings())
    composition.install(runtime)
    return runtime


@pytest.fixture
def jobs(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> Iterator[dict[str, Any]]:
    """The stack's queues and topic in moto, and the variables the stack sets for jobs."""
    sqs = boto3.client("sqs")
    queues = {
        name: sqs.create_queue(QueueName=f"stratus-test-agent-{name}")["QueueUrl"]
        for name in load_all()
    }
    dlq = sqs.create_queue(QueueName="stratus-test-ingest-dlq")["QueueUrl"]
    topic = boto3.client("sns").create_topic(Name="stratus-test-job-events")["TopicArn"]
    tenant, _ = TenantStore(cloud["tables"]["tenants"]).create("acme")
    for name, value in {
        "STRATUS_JOB_QUEUES": json.dumps(queues),
        "STRATUS_INGEST_DLQ_URL": dlq,
        "STRATUS_JOBS_TOPIC_ARN": topic,
        "STRATUS_JOB_MAX_RECEIVE_COUNT": "3",
    }.items():
        monkeypatch.setenv(name, value)
    install_runtime()
    yield {"queues": queues, "dlq": dlq, "tenant": tenant.tenant_id, "sqs": sqs, **cloud}
    composition.reset()


def serve(monkeypatch: pytest.MonkeyPatch, agent: str) -> None:
    monkeypatch.setenv("STRATUS_AGENT", agent)
    install_runtime()


def store(jobs: dict[str, Any]) -> DynamoJobStore:
    return DynamoJobStore(AwsClients().table(jobs["tables"]["jobs"]))


def drain(jobs: dict[str, Any], url: str) -> list[dict[str, Any]]:
    got = jobs["sqs"].receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    return list(got.get("Messages", []))


def as_event(jobs: dict[str, Any], messages: list[dict[str, Any]], count: str = "1") -> Any:
    """SQS messages as the agent queue's Lambda event (from the sample)."""
    template = load_event("sqs/agent_job.json")["Records"][0]
    records = []
    for message in messages:
        record = copy.deepcopy(template)
        record.update(messageId=message["MessageId"], body=message["Body"])
        record["attributes"]["ApproximateReceiveCount"] = count
        records.append(record)
    return {"Records": records}


def test_producer_contract_schema_and_samples_agree() -> None:
    published = json.loads((EVENTS / "producer/contract-v1.schema.json").read_text())
    assert published == producer_contract_schema()
    assert set(published["required"]) == {"version", "tenant_id", "agent", "input"}
    for name in (
        "producer/v1_triage.json",
        "producer/v1_routed.json",
        "producer/v1_researcher.json",
    ):
        message = ProducerMessage.model_validate(load_event(name))
        assert message.agent in load_all()
    with pytest.raises(ValueError):
        ProducerMessage.model_validate({**load_event("producer/v1_triage.json"), "extra": 1})
    with pytest.raises(ValueError, match="callback_url"):
        JobRequest(agent="triage", input="x", callback_url="file:///etc/passwd")


def test_signature_and_budget_helpers() -> None:
    body = b'{"job": 1}'
    header = sign(b"k", 1_800_000_000, body)
    assert header.startswith("t=1800000000,v1=")
    assert not verify(b"k", header, body)  # far from now: stale
    import time

    fresh = sign(b"k", int(time.time()), body)
    assert verify(b"k", fresh, body) and not verify(b"k", fresh, body + b" ")
    job = {"job_id": "job_x", "cost_usd": Decimal("0.02"), "max_cost_usd": Decimal("0.02")}
    scope = CallScope(tenant_id="t", agent="a", kind="job", scope_id="job_x", step="plan")
    with pytest.raises(JobBudgetExceeded):
        check_budget(job, scope)
    check_budget({**job, "max_cost_usd": Decimal("0.03")}, scope)
    check_budget({"job_id": "job_x", "cost_usd": Decimal(5)})  # no cap


def test_ingest_creates_jobs_and_dead_letters_poison_with_its_reason(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.handlers import ingest

    serve(monkeypatch, "")
    raw = json.dumps(load_event("sqs/ingest_batch.json")).replace("TENANT_ID", jobs["tenant"])
    event = json.loads(raw)
    result = ingest.lambda_handler(event, FakeLambdaContext())
    assert result == {"batchItemFailures": []}  # poison never fails the batch
    reasons = {
        m["MessageAttributes"]["stratus_reason"]["StringValue"]: m for m in drain(jobs, jobs["dlq"])
    }
    assert set(reasons) == {"invalid_json", "unknown_agent", "unsupported_version"}
    assert reasons["invalid_json"]["Body"] == "this is not json {"
    job_id = job_id_for(jobs["tenant"], "ticket-T-4711")
    job = store(jobs).get(job_id)
    assert job is not None and job["status"] == "queued" and job["source"] == "sqs"
    (queued,) = drain(jobs, jobs["queues"]["triage"])
    assert json.loads(queued["Body"])["job_id"] == job_id

    # The redelivered batch finds the same job; an unknown tenant is poison too.
    unknown = json.loads(raw.replace(jobs["tenant"], "nobody"))
    ingest.lambda_handler(unknown, FakeLambdaContext())
    assert {
        m["MessageAttributes"]["stratus_reason"]["StringValue"] for m in drain(jobs, jobs["dlq"])
    } >= {"unknown_tenant"}


def test_jobs_api_and_worker_run_each_job_once(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    from functions.handlers import api, worker

    serve(monkeypatch, "")
    body = {"agent": "triage", "input": "Where is my order A-1001?", "route": True}
    submit = api_event(
        None, path="/v1/jobs", body=body, headers={"Idempotency-Key": "k-1"}, tenant_id="tenant-a"
    )
    first = call(api.lambda_handler, submit)
    assert first.status == 202, first.body
    assert first.body["status"] == "queued"
    again = call(api.lambda_handler, submit)
    assert again.body["job_id"] == first.body["job_id"]
    job_id = first.body["job_id"]
    messages = drain(jobs, jobs["queues"]["triage"])
    assert len(messages) == 2  # a repeat re-sends while queued; the claim makes it harmless

    serve(monkeypatch, "triage")
    assert worker.lambda_handler(as_event(jobs, messages[:1]), FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    calls = len(fake_model.requests)
    # The duplicate, and a redelivery of the first, find the job finished: nothing runs.
    assert worker.lambda_handler(as_event(jobs, messages, "2"), FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert len(fake_model.requests) == calls

    serve(monkeypatch, "")
    got = call(
        api.lambda_handler,
        api_event(None, path=f"/v1/jobs/{job_id}", method="GET", tenant_id="tenant-a"),
    )
    assert got.status == 200, got.body
    job = got.body
    assert job["status"] == "succeeded" and job["result"]["category"] == "order_status"
    assert job["cost_usd"] > 0 and [s["name"] for s in job["steps"]] == ["main"]
    assert job["routed_to"]["agent"] == "order_status"
    child = store(jobs).get(job["routed_to"]["job_id"])
    assert child is not None and child["parent_job_id"] == job_id
    assert len(drain(jobs, jobs["queues"]["order_status"])) == 1

    other = call(
        api.lambda_handler,
        api_event(None, path=f"/v1/jobs/{job_id}", method="GET", tenant_id="tenant-b"),
    )
    assert other.status == 404 and other.body["error"]["code"] == "job_not_found"
    cancel = call(
        api.lambda_handler,
        api_event(None, path=f"/v1/jobs/{job_id}/cancel", tenant_id="tenant-a"),
    )
    assert cancel.status == 409 and cancel.body["error"]["code"] == "job_already_finished"
    approval = call(
        api.lambda_handler,
        api_event(
            None,
            path=f"/v1/jobs/{job_id}/approval",
            body={"approved": True},
            tenant_id="tenant-a",
        ),
    )
    assert approval.status == 409 and approval.body["error"]["code"] == "job_not_waiting_approval"


def test_a_live_lease_defers_a_duplicate_and_a_cancelled_job_never_runs(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    from functions.handlers import api, worker

    serve(monkeypatch, "")
    submit = api_event(None, path="/v1/jobs", body={"agent": "triage", "input": "hello"})
    job_id = call(api.lambda_handler, submit).body["job_id"]
    (message,) = drain(jobs, jobs["queues"]["triage"])
    assert store(jobs).claim(job_id, lease_s=60) is not None  # another worker holds it
    serve(monkeypatch, "triage")
    result = worker.lambda_handler(as_event(jobs, [message]), FakeLambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}

    serve(monkeypatch, "")
    second = call(
        api.lambda_handler, api_event(None, path="/v1/jobs", body={"agent": "triage", "input": "x"})
    )
    (queued,) = drain(jobs, jobs["queues"]["triage"])
    cancelled = call(
        api.lambda_handler, api_event(None, path=f"/v1/jobs/{second.body['job_id']}/cancel")
    )
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"
    serve(monkeypatch, "triage")
    calls = len(fake_model.requests)
    assert worker.lambda_handler(as_event(jobs, [queued]), FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert len(fake_model.requests) == calls


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://127.0.0.1:9/hook", False),
        ("http://localhost/hook", False),
        ("http://169.254.169.254/latest/meta-data/", False),
        ("http://10.1.2.3/x", False),
        ("http://[::1]/x", False),
        ("https://8.8.8.8/x", True),
        ("http://no-such-host.invalid/x", False),
    ],
)
def test_callbacks_only_reach_public_addresses(url: str, public: bool) -> None:
    from stratus.jobs import public_destination

    assert public_destination(url) is public

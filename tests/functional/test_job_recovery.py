"""Issue 10 on moto, with the real handlers: retry backoff on the record's own message,
the lease sweep after a worker died, inputs refused at submission with 413."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from infra.local.fake_model import FakeModelServer
from infra.local.fake_model.faults import Fault
from tests.functional.test_jobs import as_event, drain, jobs, serve, store
from tests.support import FakeLambdaContext, api_event, call, load_event

__all__ = ["jobs"]


def received_event(jobs: dict[str, Any], messages: list[dict[str, Any]], count: str) -> Any:
    """The agent queue's event for received messages, with their real receipt handles."""
    event = as_event(jobs, messages, count)
    for record, message in zip(event["Records"], messages, strict=True):
        record["receiptHandle"] = message["ReceiptHandle"]
    return event


def wait_visible(jobs: dict[str, Any], url: str, within_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        got = drain(jobs, url)
        if got:
            return got
        time.sleep(0.2)
    return []


def submit(monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]) -> Any:
    from functions.handlers import api

    serve(monkeypatch, "")
    return call(api.lambda_handler, api_event(None, path="/v1/jobs", body=body))


def test_a_retryable_failure_comes_back_after_the_backoff_not_the_visibility_timeout(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    from functions.handlers import worker

    url = jobs["queues"]["triage"]
    jobs["sqs"].set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1800"})
    job_id = submit(monkeypatch, {"agent": "triage", "input": "hello"}).body["job_id"]
    (message,) = drain(jobs, url)
    monkeypatch.setenv("STRATUS_JOB_QUEUE_URL", url)
    monkeypatch.setenv("STRATUS_JOB_RETRY_BASE_S", "2")
    monkeypatch.setenv("STRATUS_MODEL_MAX_ATTEMPTS", "1")
    serve(monkeypatch, "triage")
    fake_model.inject(Fault(status=503, times=-1))
    result = worker.lambda_handler(received_event(jobs, [message], "1"), FakeLambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert drain(jobs, url) == []  # invisible for the backoff (1-2 s), not for 30 minutes
    (again,) = wait_visible(jobs, url, within_s=10)
    assert again["MessageId"] == message["MessageId"]

    fake_model.reset()
    result = worker.lambda_handler(received_event(jobs, [again], "2"), FakeLambdaContext())
    assert result == {"batchItemFailures": []}
    done = store(jobs).get(job_id)
    assert done is not None and done["status"] == "succeeded" and done["attempts"] == 2


def test_the_sweep_requeues_a_dead_workers_job_and_the_next_run_replays_the_ledger(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    from functions.handlers import sweeper, worker
    from stratus import composition

    url = jobs["queues"]["triage"]
    job_id = submit(monkeypatch, {"agent": "triage", "input": "where is A-1001?"}).body["job_id"]
    (message,) = drain(jobs, url)
    monkeypatch.setenv("STRATUS_JOB_SWEEP_GRACE_S", "0")
    serve(monkeypatch, "triage")
    runtime = composition.current()
    # A worker claims the job, pays for the model call, and dies before recording it.
    claimed = store(jobs).claim(job_id, lease_s=0.5)
    assert claimed is not None
    from functions.agents import load_agent

    runtime.jobs.call_step(
        claimed, runtime.runner(load_agent("triage")), "main", "where is A-1001?", request_id="r"
    )
    paid = len(fake_model.requests)
    assert paid >= 1
    time.sleep(0.6)

    report = sweeper.lambda_handler({"source": "aws.scheduler"}, FakeLambdaContext())
    assert report["requeued"] == 1, report
    requeued = store(jobs).get(job_id)
    assert requeued is not None and requeued["status"] == "queued"
    (resent,) = drain(jobs, url)
    assert json.loads(resent["Body"])["job_id"] == job_id

    result = worker.lambda_handler(received_event(jobs, [resent], "1"), FakeLambdaContext())
    assert result == {"batchItemFailures": []}
    done = store(jobs).get(job_id)
    assert done is not None and done["status"] == "succeeded" and done["attempts"] == 2
    assert len(fake_model.requests) == paid  # the ledger replayed the paid call
    # The original message, redelivered later, finds the job finished.
    again = worker.lambda_handler(received_event(jobs, [message], "2"), FakeLambdaContext())
    assert again == {"batchItemFailures": []}
    assert sweeper.lambda_handler({}, FakeLambdaContext())["seen"] == 0


def test_a_step_is_recorded_only_once_its_paid_calls_are_in_the_ledger(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    """A worker killed once it began recording the step has its calls in the ledger.

    The post-call wave runs in the background while the step goes on; a slow ledger
    write must still be durable before the step's record is sent."""
    from functions.handlers import worker
    from stratus import composition
    from stratus.jobs import DynamoJobStore

    url = jobs["queues"]["triage"]
    submit(monkeypatch, {"agent": "triage", "input": "where is A-1001?"})
    (message,) = drain(jobs, url)
    serve(monkeypatch, "triage")
    ledger = composition.current().gateway.ledger
    put, written, seen = ledger.put, [], []

    def slow_put(pk: str, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.3)
        put(pk, *args, **kwargs)
        written.append(pk)

    def record_step(self: DynamoJobStore, job_id: str, step: str, **kwargs: Any) -> bool:
        seen.append(list(written))  # what the ledger holds when the record is sent
        return original(self, job_id, step, **kwargs)

    original = DynamoJobStore.record_step
    monkeypatch.setattr(ledger, "put", slow_put)
    monkeypatch.setattr(DynamoJobStore, "record_step", record_step)
    result = worker.lambda_handler(received_event(jobs, [message], "1"), FakeLambdaContext())
    assert result == {"batchItemFailures": []}
    assert len(written) == 1 and seen == [written]


def test_a_225_kb_cjk_body_is_413_input_too_large_not_500(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.handlers import api

    serve(monkeypatch, "")
    text = "漢" * (225 * 1024 // 3)
    raw = json.dumps({"agent": "researcher", "input": text}, ensure_ascii=False)
    assert len(raw.encode()) < 256 * 1024
    reply = call(api.lambda_handler, api_event(None, path="/v1/jobs", raw_body=raw))
    assert reply.status == 413, reply.body
    error = reply.body["error"]
    assert error["code"] == "input_too_large" and error["details"]["limit"] == 16_000
    assert drain(jobs, jobs["queues"]["researcher"]) == []


@pytest.fixture
def callbacks_queue(jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The callback queue and its DLQ (maxReceiveCount 3), and the variables for it."""
    sqs = jobs["sqs"]
    dlq = sqs.create_queue(QueueName="stratus-test-callbacks-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName="stratus-test-callbacks",
        Attributes={
            "VisibilityTimeout": "360",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}),
        },
    )["QueueUrl"]
    for name, value in {
        "STRATUS_CALLBACK_QUEUE_URL": url,
        "STRATUS_CALLBACK_MAX_RECEIVE_COUNT": "3",
        "STRATUS_CALLBACK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "STRATUS_JOB_RETRY_BASE_S": "0",  # back at once (the backoff itself: unit tests)
    }.items():
        monkeypatch.setenv(name, value)
    return {"url": url, "dlq": dlq}


def finish_with_callback(
    jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, callback_url: str
) -> str:
    from functions.handlers import worker

    body = {"agent": "triage", "input": "hello", "callback_url": callback_url}
    job_id = str(submit(monkeypatch, body).body["job_id"])
    (message,) = drain(jobs, jobs["queues"]["triage"])
    serve(monkeypatch, "triage")
    assert worker.lambda_handler(received_event(jobs, [message], "1"), FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    return job_id


def deliver_once(jobs: dict[str, Any], url: str) -> dict[str, Any] | None:
    """One poll of the callback queue into the callbacks function (as its mapping does)."""
    from functions.handlers import callbacks

    got = (
        jobs["sqs"]
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
        .get("Messages", [])
    )
    if not got:
        return None
    template = load_event("sqs/callback_delivery.json")["Records"][0]
    records = []
    for message in got:
        record = copy.deepcopy(template)
        record.update(
            messageId=message["MessageId"],
            receiptHandle=message["ReceiptHandle"],
            body=message["Body"],
        )
        record["attributes"]["ApproximateReceiveCount"] = message["Attributes"][
            "ApproximateReceiveCount"
        ]
        records.append(record)
    event = {"Records": records}
    result: dict[str, Any] = callbacks.lambda_handler(event, FakeLambdaContext())
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    for message in got:
        if message["MessageId"] not in failed:
            jobs["sqs"].delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return result


def job_view(monkeypatch: pytest.MonkeyPatch, job_id: str) -> dict[str, Any]:
    from functions.handlers import api

    serve(monkeypatch, "")
    reply = call(api.lambda_handler, api_event(None, path=f"/v1/jobs/{job_id}", method="GET"))
    assert reply.status == 200, reply.body
    return dict(reply.body)


def test_a_callback_is_delivered_asynchronously_and_recorded(
    jobs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    callbacks_queue: dict[str, str],
    fake_model: FakeModelServer,
) -> None:
    from tests.unit.test_callback_delivery import Receiver

    receiver = Receiver(204)
    try:
        job_id = finish_with_callback(jobs, monkeypatch, f"http://127.0.0.1:{receiver.port}/hook")
        assert receiver.requests == []  # nothing posted while the job finished
        assert job_view(monkeypatch, job_id)["callback"]["state"] == "pending"
        serve(monkeypatch, "")
        assert deliver_once(jobs, callbacks_queue["url"]) == {"batchItemFailures": []}
        ((path, headers, body),) = receiver.requests
        assert path == "/hook" and headers["X-Stratus-Job-Id"] == job_id
        assert json.loads(body)["type"] == "job.succeeded"
        callback = job_view(monkeypatch, job_id)["callback"]
        assert callback["state"] == "delivered" and callback["attempts"] == 1
        assert callback["last_status"] == 204 and callback["delivered_at"]
    finally:
        receiver.close()


def test_a_failing_callback_is_retried_then_dead_lettered_with_its_status(
    jobs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    callbacks_queue: dict[str, str],
    fake_model: FakeModelServer,
) -> None:
    from tests.unit.test_callback_delivery import Receiver

    receiver = Receiver(500)
    try:
        job_id = finish_with_callback(jobs, monkeypatch, f"http://127.0.0.1:{receiver.port}/hook")
        serve(monkeypatch, "")
        for attempt in (1, 2, 3):
            result = deliver_once(jobs, callbacks_queue["url"])
            assert result is not None and len(result["batchItemFailures"]) == 1, attempt
            recorded = job_view(monkeypatch, job_id)["callback"]
            assert recorded["attempts"] == attempt and recorded["last_status"] == 500
            serve(monkeypatch, "")
        assert deliver_once(jobs, callbacks_queue["url"]) is None  # moved on this receive
        (dead,) = drain(jobs, callbacks_queue["dlq"])
        assert json.loads(dead["Body"])["job_id"] == job_id
        assert len(receiver.requests) == 3
        callback = job_view(monkeypatch, job_id)["callback"]
        assert callback["state"] == "failed" and callback["delivered_at"] is None
    finally:
        receiver.close()

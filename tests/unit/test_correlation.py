"""One correlation id end to end (issue 16), on the in-memory fakes: the id's rules, the
job record, the queue message attributes, routed children, the workflow input, the SNS
event, the callback header, the ingest queue and the log lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import pytest

from stratus import correlation
from stratus.config import Settings
from stratus.jobs import JobRequest, JobService, Notifier
from stratus.jobs.callbacks import CallbackDelivery
from stratus.jobs.ingest import Ingest
from stratus.jobs.memory import (
    MemoryCallbacks,
    MemoryEvents,
    MemoryJobStore,
    MemoryQueue,
    MemorySecrets,
    MemoryWorkflows,
)
from stratus.jobs.retries import Delivery
from stratus.jobs.workflow import WorkflowTasks
from stratus.observability import logger
from stratus.tenants import MemoryTenants
from stratus.usage import Usage
from stratus.workflows import SupervisedWorkflow

QUEUES = {
    "triage": "https://sqs.test/triage",
    "order_status": "https://sqs.test/order_status",
    "researcher": "https://sqs.test/researcher",
}
ARN = "arn:aws:states:eu-west-1:123456789012:stateMachine:researcher"
CALLBACKS = "https://sqs.test/callbacks"
HEX32 = r"^[0-9a-f]{32}$"


class Lines(logging.Handler):
    """The logger's JSON lines, formatted by its own Powertools formatter."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(logger.registered_formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    handler = Lines()
    logger._logger.addHandler(handler)
    level = logger.log_level
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger._logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def unbound() -> Iterator[None]:
    correlation.clear()
    yield
    correlation.clear()


@dataclass
class Decision:
    output: dict[str, Any] = field(default_factory=lambda: {"category": "order_status"})
    model: str = "fake"
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=1, output_tokens=1))
    cost_usd: Decimal = Decimal("0.001")


class Decides:
    """A step runner whose decision routes to ``order_status``."""

    def run(self, user_input: Any, *, ctx: Any, deadline: Any = None) -> Decision:
        return Decision()


def service() -> tuple[JobService, MemoryJobStore, MemoryQueue, MemoryEvents, MemoryWorkflows]:
    store, queue, events, workflows = (
        MemoryJobStore(),
        MemoryQueue(),
        MemoryEvents(),
        MemoryWorkflows(),
    )
    settings = Settings(
        job_queues=QUEUES, workflows={"researcher": ARN}, callback_queue_url=CALLBACKS
    )
    jobs = JobService(
        store, queue, Notifier(publisher=events), settings=settings, workflows=workflows
    )
    return jobs, store, queue, events, workflows


# -- the id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["abc", "A-b_c.d:e", "x" * 128, "0123456789abcdef0123456789abcdef"]
)
def test_an_acceptable_header_is_kept(value: str) -> None:
    assert correlation.accept(value) == value
    event = {"headers": {"x-correlation-id": value}, "multiValueHeaders": None}
    assert correlation.from_event(event) == value  # header names are case-insensitive


@pytest.mark.parametrize(
    "value", [None, "", "x" * 129, "has space", "semi;colon", "ünï", "a/b", "new\nline", 7]
)
def test_an_unacceptable_or_missing_header_gets_a_new_id(value: Any) -> None:
    fresh = correlation.accept(value)
    assert fresh != value
    assert len(fresh) == 32 and int(fresh, 16) >= 0 and fresh == fresh.lower()
    assert correlation.accept(value) != fresh  # new each time


def test_multi_value_headers_and_no_headers() -> None:
    event = {"headers": None, "multiValueHeaders": {"X-Correlation-Id": ["one", "two"]}}
    assert correlation.from_event(event) == "two"
    assert len(correlation.from_event({})) == 32


def test_the_response_header_is_set_on_both_header_maps() -> None:
    response = {
        "statusCode": 404,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"x-correlation-id": ["stale"], "Content-Type": ["application/json"]},
        "body": "{}",
    }
    out = correlation.with_response_header(response, "cid-1")
    assert out["headers"]["X-Correlation-Id"] == "cid-1"
    assert out["multiValueHeaders"]["X-Correlation-Id"] == ["cid-1"]
    assert "x-correlation-id" not in out["multiValueHeaders"]
    assert correlation.with_response_header({"streamed": False}, "cid-1") == {"streamed": False}


def test_bind_sets_every_log_line(lines: list[dict[str, Any]]) -> None:
    correlation.bind("cid-logs")
    logger.info("something happened")
    assert correlation.current() == "cid-logs"
    assert lines[-1]["correlation_id"] == "cid-logs"
    correlation.clear()
    logger.info("another unit of work")
    assert correlation.current() is None and lines[-1].get("correlation_id") is None


def test_message_attributes_in_both_shapes() -> None:
    lambda_shape = {"correlation_id": {"stringValue": "c-1", "dataType": "String"}}
    boto_shape = {"correlation_id": {"StringValue": "c-2", "DataType": "String"}}
    assert correlation.from_message_attributes(lambda_shape) == "c-1"
    assert correlation.from_message_attributes(boto_shape) == "c-2"
    assert correlation.from_message_attributes({"correlation_id": {"stringValue": "a b"}}) is None
    assert correlation.from_message_attributes(None) is None


# -- jobs -----------------------------------------------------------------------------


def test_a_job_stores_the_bound_id_and_its_message_carries_it() -> None:
    jobs, store, queue, _, _ = service()
    correlation.bind("req-42")
    job, _ = jobs.submit(
        JobRequest(agent="triage", input="x"), tenant_id="t1", idempotency_key=None, source="api"
    )
    assert job["correlation_id"] == "req-42"
    assert jobs.view_for_tenant(job["job_id"], "t1").correlation_id == "req-42"
    ((url, _, attributes),) = queue.sent
    assert url == QUEUES["triage"] and attributes["correlation_id"] == "req-42"
    # A repeat of the same job under another id keeps the first one (the record wins).
    correlation.bind("req-43")
    again, created = jobs.submit(
        JobRequest(agent="triage", input="x"), tenant_id="t1", idempotency_key=None, source="api"
    )
    assert created and again["correlation_id"] == "req-43"
    assert store.get(job["job_id"])["correlation_id"] == "req-42"  # type: ignore[index]


def test_without_a_bound_id_a_job_gets_a_new_one() -> None:
    jobs, _, queue, _, _ = service()
    job, _ = jobs.submit(
        JobRequest(agent="triage", input="x"), tenant_id="t1", idempotency_key=None, source="api"
    )
    assert len(job["correlation_id"]) == 32
    assert queue.sent[0][2]["correlation_id"] == job["correlation_id"]


def test_a_routed_child_inherits_the_id_and_the_event_and_callback_carry_it() -> None:
    jobs, store, queue, events, _ = service()
    request = JobRequest(
        agent="triage", input="where is A-1001?", route=True, callback_url="https://h.example/cb"
    )
    job, _ = jobs.submit(
        request, tenant_id="t1", idempotency_key=None, source="api", correlation_id="flow-7"
    )
    correlation.bind("someone-else")  # the record's id wins over whatever is bound
    claimed = store.claim(job["job_id"], lease_s=60)
    assert claimed is not None
    jobs.run(
        claimed, Decides(), routes={"order_status": "order_status"}, request_id="r", receives=1
    )
    done = store.get(job["job_id"])
    assert done is not None and done["status"] == "succeeded"
    child = store.get(done["routed_to"]["job_id"])
    assert child is not None and child["correlation_id"] == "flow-7"
    assert child["parent_job_id"] == job["job_id"]
    sent = {url: attrs for url, _, attrs in queue.sent}
    assert sent[QUEUES["order_status"]]["correlation_id"] == "flow-7"
    assert sent[CALLBACKS]["correlation_id"] == "flow-7"
    ((message, attributes),) = events.published
    assert attributes["correlation_id"] == "flow-7"
    event = json.loads(message)
    assert event["correlation_id"] == "flow-7" and event["job"]["correlation_id"] == "flow-7"

    callbacks = MemoryCallbacks()
    delivery = CallbackDelivery(
        store,
        queue,
        callbacks,
        settings=Settings(callback_secret_name="cb", callback_queue_url=CALLBACKS),
        secrets=MemorySecrets({"cb": json.dumps({"key": "k"})}),
        resolver=lambda host, port: ["93.184.216.34"],
    )
    body = json.dumps({"version": "1", "job_id": job["job_id"], "tenant_id": "t1"})
    assert delivery.deliver(body, Delivery(CALLBACKS, "rh", 1)) == "delivered"
    ((_, _, headers),) = callbacks.posted
    assert headers["X-Correlation-Id"] == "flow-7"
    assert correlation.current() == "flow-7"  # the callbacks function's log lines


def test_the_workflow_input_carries_the_id_and_its_tasks_log_it(
    lines: list[dict[str, Any]],
) -> None:
    jobs, store, _, _, workflows = service()
    job, _ = jobs.submit(
        JobRequest(agent="researcher", input="q"),
        tenant_id="t1",
        idempotency_key=None,
        source="api",
        correlation_id="wf-1",
    )
    claimed = store.claim(job["job_id"], lease_s=60)
    assert claimed is not None
    jobs.start_workflow(claimed)
    (execution_input,) = workflows.started.values()
    assert json.loads(execution_input)["correlation_id"] == "wf-1"

    correlation.bind("stale-from-another-invocation")
    tasks = WorkflowTasks(jobs, cast(SupervisedWorkflow, None), {"plan": Decides()})
    tasks.handle({"action": "check_budget", "job_id": job["job_id"], "step": "plan"})
    assert correlation.current() == "wf-1"  # the job record's, not the stale one
    logger.info("a workflow task line")
    assert lines[-1]["correlation_id"] == "wf-1"


def test_the_ingest_queue_honours_the_producers_attribute_else_generates(
    lines: list[dict[str, Any]],
) -> None:
    tenants = MemoryTenants()
    tenant, _ = tenants.create("acme")
    jobs, _, queue, _, _ = service()
    ingest = Ingest(jobs, tenants, queue, "https://sqs.test/ingest-dlq")
    body = json.dumps(
        {"version": "1", "tenant_id": tenant.tenant_id, "agent": "triage", "input": "hello"}
    )
    assert ingest.accept(body, message_id="m-1", correlation_id="producer-9") is True
    assert queue.sent[-1][2]["correlation_id"] == "producer-9"
    assert any(line.get("correlation_id") == "producer-9" for line in lines)
    assert ingest.accept(body, message_id="m-2", correlation_id="not valid!") is True
    fresh = queue.sent[-1][2]["correlation_id"]
    assert fresh != "producer-9" and len(fresh) == 32


def test_bind_annotates_the_xray_segment_when_tracing_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stratus.observability import tracer

    annotations: list[tuple[str, Any]] = []
    monkeypatch.setattr(tracer, "disabled", False)
    monkeypatch.setattr(
        tracer, "put_annotation", lambda key, value: annotations.append((key, value))
    )
    correlation.bind("xray-1")
    assert annotations == [("correlation_id", "xray-1")]
    monkeypatch.setattr(tracer, "disabled", True)
    correlation.bind("xray-2")
    assert annotations == [("correlation_id", "xray-1")]  # tracing off: no annotation


def test_the_ingest_handler_hands_the_producers_attribute_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from functions.handlers import ingest as handler

    seen: dict[str, Any] = {}

    def accept(body: str, **kwargs: Any) -> bool:
        seen.update(kwargs)
        return True

    runtime = SimpleNamespace(job_ingest=SimpleNamespace(accept=accept))
    monkeypatch.setattr(handler.composition, "current", lambda: runtime)
    record = {
        "messageId": "m-1",
        "body": "{}",
        "attributes": {"ApproximateReceiveCount": "1", "SenderId": "AIDA"},
        "messageAttributes": {
            "correlation_id": {"stringValue": "from-producer", "dataType": "String"}
        },
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:ingest",
    }
    handler.record_handler(SQSRecord(record))
    assert seen["correlation_id"] == "from-producer"
    record["messageAttributes"] = {}
    handler.record_handler(SQSRecord(record))
    assert seen["correlation_id"] is None  # the domain generates one


def test_an_internal_invocation_may_carry_its_id_in_the_event() -> None:
    assert correlation.from_event({"correlation_id": "top-1", "headers": None}) == "top-1"
    streamed = {"stratus_stream": {"correlation_id": "ws-1", "action": "invoke"}}
    assert correlation.from_event(streamed) == "ws-1"
    assert len(correlation.from_event({"stratus_stream": {"correlation_id": "a b"}})) == 32
    assert correlation.header_value({"X-Correlation-Id": "bad id"}) is None
    assert correlation.header_value(None, {"x-correlation-id": ["ok-1"]}) == "ok-1"

"""SQS event source mappings against moto in server mode, invoking real worker processes."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel
from moto.server import ThreadedMotoServer

from infra.local.lambda_runtime import (
    FunctionConfig,
    InvokeResult,
    LambdaRuntime,
    default_base_env,
)
from infra.local.sqs_poller import EventSourceMapping, SqsPoller

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def sqs(moto_endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def runtime() -> Iterator[LambdaRuntime]:
    handlers = "tests.local.handlers"
    functions = [
        FunctionConfig("sqs-partial", f"{handlers}.sqs_batch.handler", {}, timeout_s=10),
        FunctionConfig("sqs-bogus", f"{handlers}.sqs_batch.bogus_failures", {}, timeout_s=10),
        FunctionConfig("sqs-all-failed", f"{handlers}.sqs_batch.report_all_failed", {}),
        FunctionConfig("always-raises", f"{handlers}.raiser.handler", {}, timeout_s=10),
    ]
    base_env = {
        **default_base_env(),
        "POWERTOOLS_SERVICE_NAME": "stratus-test",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    with LambdaRuntime(functions, cwd=REPO, base_env=base_env, log_sink=lambda line: None) as rt:
        yield rt


def make_queue(sqs: Any, *, max_receive_count: int = 2) -> tuple[str, str, str]:
    """A queue with a 1 s visibility timeout and a DLQ; returns (url, arn, dlq_url)."""
    name = f"q-{uuid.uuid4().hex[:12]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn, dlq_url


def counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


class Recorder:
    """Wraps ``LambdaRuntime.invoke`` to keep every event the poller sent."""

    def __init__(self, runtime: LambdaRuntime) -> None:
        self.runtime = runtime
        self.events: list[dict[str, Any]] = []
        self.results: list[InvokeResult] = []

    def __call__(self, name: str, event: Any) -> InvokeResult:
        self.events.append(event)
        result = self.runtime.invoke(name, event)
        self.results.append(result)
        return result

    def bodies(self) -> list[list[str]]:
        return [[record["body"] for record in event["Records"]] for event in self.events]


def until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    step: Callable[[], Any] = lambda: time.sleep(0.05),
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        step()


def test_the_event_has_lambdas_sqs_shape(sqs: Any, runtime: LambdaRuntime) -> None:
    url, arn, _ = make_queue(sqs)
    sqs.send_message(
        QueueUrl=url,
        MessageBody='{"order": "A-1"}',
        MessageAttributes={
            "tenant": {"DataType": "String", "StringValue": "tenant-a"},
            "attempt": {"DataType": "Number", "StringValue": "1"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01raw"},
        },
    )
    recorder = Recorder(runtime)
    poller = SqsPoller(
        EventSourceMapping("sqs-partial", url, arn), recorder, sqs_client=sqs, region=REGION
    )

    assert poller.poll_once() == 1

    [event] = recorder.events
    [record] = event["Records"]
    assert record["body"] == '{"order": "A-1"}'
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["awsRegion"] == REGION
    assert record["messageId"] and record["receiptHandle"] and record["md5OfBody"]
    attributes = record["attributes"]
    assert attributes["ApproximateReceiveCount"] == "1"
    for name in ("SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"):
        assert attributes[name]
    assert record["messageAttributes"] == {
        "tenant": {
            "stringValue": "tenant-a",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "attempt": {
            "stringValue": "1",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01raw").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    SqsModel.model_validate(event)  # Powertools' parser accepts it as an SQS event
    # The handler validated it too (SqsRecordModel), processed it, and it was deleted.
    assert recorder.results[0].payload == {"batchItemFailures": []}
    assert poller.stats == {"received": 1, "deleted": 1, "failed_records": 0, "invoke_errors": 0}
    assert counts(sqs, url) == (0, 0)


def test_only_the_failed_record_is_redelivered(sqs: Any, runtime: LambdaRuntime) -> None:
    url, arn, dlq_url = make_queue(sqs, max_receive_count=5)
    for body in ("ok-1", "fail-2", "ok-3"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    recorder = Recorder(runtime)
    poller = SqsPoller(
        EventSourceMapping("sqs-partial", url, arn), recorder, sqs_client=sqs, region=REGION
    )

    until(lambda: poller.stats["received"] >= 3, step=poller.poll_once)
    assert poller.stats == {"received": 3, "deleted": 2, "failed_records": 1, "invoke_errors": 0}
    assert counts(sqs, url) == (0, 1)  # the failed one waits out its visibility timeout

    until(lambda: poller.stats["received"] >= 4, step=poller.poll_once)
    redelivered = recorder.events[-1]["Records"]
    assert [r["body"] for r in redelivered] == ["fail-2"]
    assert redelivered[0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert sorted(body for batch in recorder.bodies() for body in batch) == [
        "fail-2",
        "fail-2",
        "ok-1",
        "ok-3",
    ]
    assert counts(sqs, dlq_url) == (0, 0)


def test_a_message_that_always_fails_ends_in_the_dlq(sqs: Any, runtime: LambdaRuntime) -> None:
    url, arn, dlq_url = make_queue(sqs, max_receive_count=2)
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    poller = SqsPoller(
        EventSourceMapping("always-raises", url, arn), runtime.invoke, sqs_client=sqs, region=REGION
    ).start()
    try:
        until(lambda: counts(sqs, dlq_url)[0] == 1, timeout=15)
    finally:
        started = time.monotonic()
        poller.stop()
        assert time.monotonic() - started < 3  # short long-polls: stop is prompt
    assert not poller.running

    # moto applied the queue's RedrivePolicy on receive: exactly maxReceiveCount attempts.
    assert poller.stats == {"received": 2, "deleted": 0, "failed_records": 2, "invoke_errors": 2}
    assert counts(sqs, url) == (0, 0)
    [moved] = sqs.receive_message(QueueUrl=dlq_url, MessageSystemAttributeNames=["All"])["Messages"]
    assert moved["Body"] == "poison"


def test_batch_size_caps_each_invocation(sqs: Any, runtime: LambdaRuntime) -> None:
    url, arn, _ = make_queue(sqs)
    sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": str(i), "MessageBody": f"ok-{i}"} for i in range(5)],
    )
    recorder = Recorder(runtime)
    poller = SqsPoller(
        EventSourceMapping("sqs-partial", url, arn, batch_size=3),
        recorder,
        sqs_client=sqs,
        region=REGION,
    )

    until(lambda: poller.stats["deleted"] >= 5, step=poller.poll_once)

    sizes = [len(batch) for batch in recorder.bodies()]
    assert max(sizes) <= 3 and sum(sizes) == 5
    assert counts(sqs, url) == (0, 0)


def test_the_batching_window_gathers_messages_sent_during_it(
    sqs: Any, runtime: LambdaRuntime
) -> None:
    url, arn, _ = make_queue(sqs)
    recorder = Recorder(runtime)
    poller = SqsPoller(
        EventSourceMapping("sqs-partial", url, arn, batch_size=10, maximum_batching_window_s=2.0),
        recorder,
        sqs_client=sqs,
        region=REGION,
    )
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"early-{i}"} for i in range(2)]
    )
    handled: list[int] = []
    polling = threading.Thread(target=lambda: handled.append(poller.poll_once()))
    polling.start()
    time.sleep(0.5)
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"late-{i}"} for i in range(2)]
    )
    polling.join(15)

    assert handled == [4]
    assert sorted(recorder.bodies()[0]) == ["early-0", "early-1", "late-0", "late-1"]


def test_a_full_batch_does_not_wait_for_the_window(sqs: Any, runtime: LambdaRuntime) -> None:
    url, arn, _ = make_queue(sqs)
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"ok-{i}"} for i in range(4)]
    )
    poller = SqsPoller(
        EventSourceMapping("sqs-partial", url, arn, batch_size=4, maximum_batching_window_s=20),
        runtime.invoke,
        sqs_client=sqs,
        region=REGION,
    )

    started = time.monotonic()
    assert poller.poll_once() == 4
    assert time.monotonic() - started < 10


def test_an_unknown_item_identifier_fails_the_whole_batch(sqs: Any, runtime: LambdaRuntime) -> None:
    url, arn, _ = make_queue(sqs)
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"ok-{i}"} for i in range(3)]
    )
    poller = SqsPoller(
        EventSourceMapping("sqs-bogus", url, arn), runtime.invoke, sqs_client=sqs, region=REGION
    )

    until(lambda: poller.stats["received"] >= 3, step=poller.poll_once)

    assert poller.stats["deleted"] == 0 and poller.stats["failed_records"] == 3
    assert sum(counts(sqs, url)) == 3


def test_without_report_batch_item_failures_a_successful_invoke_deletes_all(
    sqs: Any, runtime: LambdaRuntime
) -> None:
    url, arn, _ = make_queue(sqs)
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m-{i}"} for i in range(3)]
    )
    mapping = EventSourceMapping("sqs-all-failed", url, arn, report_batch_item_failures=False)
    poller = SqsPoller(mapping, runtime.invoke, sqs_client=sqs, region=REGION)

    until(lambda: poller.stats["deleted"] >= 3, step=poller.poll_once)

    assert counts(sqs, url) == (0, 0)


def test_a_crash_while_invoking_deletes_nothing(sqs: Any) -> None:
    url, arn, _ = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="precious")

    def broken_invoke(name: str, event: Any) -> InvokeResult:
        raise RuntimeError("the runtime blew up")

    poller = SqsPoller(
        EventSourceMapping("sqs-partial", url, arn), broken_invoke, sqs_client=sqs, region=REGION
    )

    assert poller.poll_once() == 1
    assert poller.stats == {"received": 1, "deleted": 0, "failed_records": 1, "invoke_errors": 1}
    assert counts(sqs, url) == (0, 1)  # still there, invisible until the timeout expires


def test_mapping_settings_are_validated_like_aws() -> None:
    with pytest.raises(ValueError):
        EventSourceMapping("f", "url", "arn", batch_size=0)
    with pytest.raises(ValueError):
        EventSourceMapping("f", "url", "arn", batch_size=100)  # > 10 needs a window
    EventSourceMapping("f", "url", "arn", batch_size=100, maximum_batching_window_s=1)


def test_several_pollers_keep_several_batches_in_flight(sqs: Any) -> None:
    url, arn, _ = make_queue(sqs, max_receive_count=5)
    for index in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m-{index}")
    together = threading.Barrier(3, timeout=10)

    def invoke(name: str, event: Any) -> InvokeResult:
        together.wait()  # only returns once three batches are in flight at the same time
        return InvokeResult(
            request_id="r",
            payload={"batchItemFailures": []},
            error=None,
            duration_ms=1.0,
            cold_start=False,
        )

    mapping = EventSourceMapping("sqs-partial", url, arn, batch_size=1)
    poller = SqsPoller(mapping, invoke, sqs_client=sqs, region=REGION, pollers=3).start()
    try:
        until(lambda: poller.stats["deleted"] >= 3)
    finally:
        poller.stop()
    assert not together.broken
    assert counts(sqs, url) == (0, 0)

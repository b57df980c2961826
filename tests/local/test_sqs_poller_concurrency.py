"""The local event source mapping honours ``ScalingConfig.MaximumConcurrency``."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.local.lambda_runtime import InvokeResult
from infra.local.sqs_poller import EventSourceMapping, SqsPoller

REGION = "us-east-1"


@pytest.fixture(scope="module")
def sqs() -> Iterator[Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield boto3.client(
        "sqs",
        endpoint_url=f"http://{host}:{port}",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    server.stop()


def test_maximum_concurrency_must_be_what_aws_accepts() -> None:
    for bad in (0, 1, 1001):
        with pytest.raises(ValueError, match="maximum_concurrency"):
            EventSourceMapping("f", "url", "arn", maximum_concurrency=bad)
    EventSourceMapping("f", "url", "arn", maximum_concurrency=2)


def test_six_pollers_never_run_more_than_the_maximum_concurrency(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))
    lock = threading.Condition()
    state = {"in_flight": 0, "peak": 0, "done": 0}
    gate = threading.Event()

    def invoke(_name: str, event: Any) -> InvokeResult:
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
            lock.notify_all()
        gate.wait(10)
        with lock:
            state["in_flight"] -= 1
            state["done"] += len(event["Records"])
            lock.notify_all()
        return InvokeResult(
            request_id="r",
            payload={"batchItemFailures": []},
            error=None,
            duration_ms=1.0,
            cold_start=False,
        )

    mapping = EventSourceMapping("worker", url, arn, batch_size=1, maximum_concurrency=2)
    poller = SqsPoller(mapping, invoke, sqs_client=sqs, region=REGION, wait_time_s=0, pollers=6)
    poller.start()
    try:
        with lock:
            assert lock.wait_for(lambda: state["in_flight"] == 2, timeout=10)
            # Every other poller had this long to start a third invocation: none may.
            lock.wait_for(lambda: state["in_flight"] > 2, timeout=0.5)
            assert state["in_flight"] == 2
        gate.set()
        with lock:
            assert lock.wait_for(lambda: state["done"] == 12, timeout=20)
    finally:
        gate.set()
        poller.stop()
    assert state["peak"] == 2
    assert poller.max_in_flight == 2

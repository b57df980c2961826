"""moto's SQS reports the sender (issue 14): with ``infra.local.moto_sender`` installed a
message's SenderId is the sending request's access key id, the identity the local cloud's
producer bindings use; without it moto reports one constant for everyone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.local import moto_sender
from infra.local.lambda_types import InvokeResult
from infra.local.sqs_poller import EventSourceMapping, SqsPoller

MOTO_CONSTANT = "AIDAIT2UOQQY3AUEKVGXU"


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    moto_sender.uninstall()
    server.stop()


def sqs(endpoint: str, access_key: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key="secret",
    )


def senders(endpoint: str, queue: str, count: int) -> list[str]:
    got = sqs(endpoint, "reader").receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, MessageSystemAttributeNames=["SenderId"]
    )["Messages"]
    assert len(got) == count
    return sorted(m["Attributes"]["SenderId"] for m in got)


def test_without_the_patch_moto_reports_one_constant(endpoint: str) -> None:
    url = sqs(endpoint, "a").create_queue(QueueName="plain")["QueueUrl"]
    sqs(endpoint, "producer-a").send_message(QueueUrl=url, MessageBody="1")
    sqs(endpoint, "producer-b").send_message(QueueUrl=url, MessageBody="2")
    assert senders(endpoint, url, 2) == [MOTO_CONSTANT, MOTO_CONSTANT]


def test_each_message_carries_its_senders_access_key_id(endpoint: str) -> None:
    moto_sender.install()
    moto_sender.install()  # idempotent
    url = sqs(endpoint, "a").create_queue(QueueName="bound")["QueueUrl"]
    sqs(endpoint, "producer-a").send_message(QueueUrl=url, MessageBody="1")
    sqs(endpoint, "producer-b").send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": "1", "MessageBody": "2"}, {"Id": "2", "MessageBody": "3"}],
    )
    assert senders(endpoint, url, 3) == ["producer-a", "producer-b", "producer-b"]
    assert moto_sender.current_sender() is None  # nothing left behind on this thread


def test_the_poller_passes_the_sender_on_in_the_lambda_event(endpoint: str) -> None:
    moto_sender.install()
    client = sqs(endpoint, "admin")
    url = client.create_queue(QueueName="ingest")["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sqs(endpoint, "demo").send_message(QueueUrl=url, MessageBody="{}")
    events: list[Any] = []

    def invoke(name: str, event: Any) -> InvokeResult:
        events.append(event)
        return InvokeResult("r-1", None, None, 1.0, False)

    poller = SqsPoller(
        EventSourceMapping("ingest", url, arn), invoke, sqs_client=client, wait_time_s=0
    )
    assert poller.poll_once() == 1
    ((record,),) = [e["Records"] for e in events]
    assert record["attributes"]["SenderId"] == "demo"

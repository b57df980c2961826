"""One correlation id end to end on the local cloud (issue 16, "Done when").

A routed job is followed from ``POST /v1/jobs`` (with ``X-Correlation-Id``) through the
triage worker, the child job on the specialist's queue, the SNS job events and the
callback; the same id is in the response header, both job records, the SQS message
attributes (each worker logs where its id came from: ``correlation_from: message``), every
log line of the flow (the cloud's log ring, :mod:`infra.local.log_buffer`), the events'
field and message attribute, and the callback request's header.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from infra.local.cloud import LocalCloud
from infra.local.demo import http
from stratus.tenants import TenantStore
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


@pytest.fixture(scope="module")
def key(cloud: LocalCloud, aws: Callable[[str], Any]) -> str:
    """A tenant of this module's own."""
    facts = cloud.facts
    assert facts is not None
    _, secret = TenantStore(facts.tables["tenants"], aws("dynamodb")).create("correlation-e2e")
    return secret


class Receiver:
    """Job callbacks on 127.0.0.1, with their headers."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append(dict(self.headers.items()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def events(cloud: LocalCloud, aws: Callable[[str], Any]) -> Callable[[], list[dict[str, Any]]]:
    """Every job event of the SNS topic (body and message attributes), via a queue."""
    facts = cloud.facts
    assert facts is not None
    sqs, sns = aws("sqs"), aws("sns")
    url = sqs.create_queue(QueueName=f"e2e-correlation-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=facts.jobs_topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    seen: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        )
        for message in got.get("Messages", []):
            seen.append(
                {
                    "body": json.loads(message["Body"]),
                    "attributes": message.get("MessageAttributes", {}),
                }
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return seen

    return read


def _finished(cloud: LocalCloud, key: str, job_id: str) -> Any:
    assert cloud.facts is not None
    api = cloud.facts.api_url

    def done() -> Any:
        reply = http("GET", f"{api}/v1/jobs/{job_id}", None, _auth(key))
        assert reply.status in (200, 404), reply.body
        return reply if reply.status == 200 and reply.body["status"] in TERMINAL else None

    return wait_for(done, timeout=45)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def test_one_id_follows_a_routed_job_through_every_hop(
    cloud: LocalCloud,
    key: str,
    receiver: Receiver,
    events: Callable[[], list[dict[str, Any]]],
) -> None:
    facts = cloud.facts
    assert facts is not None and cloud.fake_model is not None
    cloud.fake_model.reset()
    cid = f"e2e-flow.{uuid.uuid4().hex[:12]}:1"
    body = {
        "agent": "triage",
        "input": "Where is my order A-1001?",
        "route": True,
        "callback_url": receiver.url,
    }
    reply = http("POST", f"{facts.api_url}/v1/jobs", body, {**_auth(key), "X-Correlation-Id": cid})
    assert reply.status == 202, reply.body
    assert _header(reply.headers, "X-Correlation-Id") == cid  # the response header

    parent = _finished(cloud, key, reply.body["job_id"]).body
    assert parent["status"] == "succeeded", parent
    assert parent["correlation_id"] == cid  # GET /v1/jobs/{id} shows it
    assert parent["routed_to"]["agent"] == "order_status"
    child_id = parent["routed_to"]["job_id"]
    read = _finished(cloud, key, child_id)
    child = read.body
    assert child["status"] == "succeeded", child
    assert child["correlation_id"] == cid and child["parent_job_id"] == parent["job_id"]
    assert _header(read.headers, "X-Correlation-Id") != cid  # that GET was its own request

    # The SNS job events: the field, the job view inside and the message attribute.
    def both_events() -> list[dict[str, Any]] | None:
        mine = [e for e in events() if e["body"]["job"]["job_id"] in (parent["job_id"], child_id)]
        return mine if len(mine) >= 2 else None

    for event in wait_for(both_events, timeout=30):
        assert event["body"]["correlation_id"] == cid
        assert event["body"]["job"]["correlation_id"] == cid
        assert event["attributes"]["correlation_id"]["StringValue"] == cid

    # The callback request's header (the parent job registered the callback).
    (headers,) = wait_for(
        lambda: (
            [h for h in receiver.received if _header(h, "X-Stratus-Job-Id") == parent["job_id"]]
            or None
        ),
        timeout=30,
    )
    assert _header(headers, "X-Correlation-Id") == cid

    # The log lines: each hop logged under the id, and every line of the flow carries it.
    def all_hops() -> list[dict[str, Any]] | None:
        lines = cloud.logs.query(correlation_id=cid, limit=5000, platform=False)
        functions = {line["function"] for line in lines}
        delivered = any(line.get("message") == "callback delivered" for line in lines)
        return lines if delivered and len(functions) >= 4 else None

    lines = wait_for(all_hops, timeout=30)
    assert all(line["correlation_id"] == cid for line in lines)
    functions = {line["function"] for line in lines}
    assert any("triage" in f for f in functions) and any("order_status" in f for f in functions)
    received = [line for line in lines if line.get("message") == "job message received"]
    # Both workers took the id from the SQS message attribute of their job message.
    assert {line["record"]["job_id"] for line in received} >= {parent["job_id"], child_id}
    assert all(line["record"]["correlation_from"] == "message" for line in received)
    assert any(line.get("message") == "job routed" for line in lines)
    # No line of either job carries another id.
    everything = cloud.logs.query(limit=5000, platform=False)
    of_jobs = [
        line
        for line in everything
        if (line.get("record") or {}).get("job_id") in (parent["job_id"], child_id)
    ]
    assert of_jobs and all(line["correlation_id"] == cid for line in of_jobs)


def test_an_invalid_header_gets_a_new_id_and_errors_carry_it(cloud: LocalCloud, key: str) -> None:
    facts = cloud.facts
    assert facts is not None
    bad = http(
        "GET",
        f"{facts.api_url}/v1/jobs/job_doesnotexist",
        None,
        {**_auth(key), "X-Correlation-Id": "not valid; spaces"},
    )
    assert bad.status == 404 and bad.body["error"]["code"] == "job_not_found"
    fresh = _header(bad.headers, "X-Correlation-Id")
    assert fresh and fresh != "not valid; spaces" and len(fresh) == 32
    int(fresh, 16)
    invalid = http(
        "POST",
        f"{facts.api_url}/v1/jobs",
        {"agent": "triage"},
        {**_auth(key), "X-Correlation-Id": "c-422"},
    )
    assert invalid.status == 422 and _header(invalid.headers, "X-Correlation-Id") == "c-422"


def test_the_gateways_own_answers_carry_the_id(cloud: LocalCloud) -> None:
    facts = cloud.facts
    assert facts is not None
    denied = http("GET", f"{facts.api_url}/v1/jobs/job_x", None, {"X-Correlation-Id": "c-401"})
    assert denied.status == 401 and _header(denied.headers, "X-Correlation-Id") == "c-401"
    missing = http("GET", f"{facts.api_url}/v1/nowhere", None, {"X-Correlation-Id": "bad id"})
    assert missing.status == 404
    fresh = _header(missing.headers, "X-Correlation-Id")
    assert fresh and len(fresh) == 32 and fresh != "bad id"

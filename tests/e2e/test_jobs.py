"""Asynchronous jobs end to end on the local cloud: HTTP, a plain boto3 producer, workflows.

The cloud runs the stack's own queues, DLQs, pollers and the researcher state
machine. The stage is the dev stage with a 6 s job worker timeout, so the job
queues' visibility timeout (6x) is 36 s and a redelivery after a crash comes
back quickly. The triage worker runs wrapped (``tests.e2e.handlers.crash_once_worker``):
a job whose input says CRASH-ONCE kills the worker process on its first delivery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.config import load_stage
from infra.local.cloud import Extras, LocalCloud
from infra.local.demo import http
from stratus.jobs import SIGNATURE_HEADER, job_id_for, verify
from stratus.tenants import TenantStore
from tests.e2e.helpers import offline_environ, wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")
ROOT = Path(__file__).resolve().parents[2]

TERMINAL = {"succeeded", "failed", "cancelled"}


class Callbacks:
    """A receiver for job callbacks on 127.0.0.1."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def for_job(self, job_id: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.received if h.get("X-Stratus-Job-Id") == job_id]


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    stage = load_stage("dev").model_copy(update={"job_worker_timeout_s": 6})
    extras = Extras(handler_overrides={"worker:triage": "tests.e2e.handlers.crash_once_worker"})
    environ = offline_environ()
    with LocalCloud(
        stage=stage,
        api_port=0,
        aws_port=0,
        state_file=None,
        extras=extras,
        log_sink=lambda line: None,
        environ=environ,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def events(cloud: LocalCloud, aws: Callable[[str], Any]) -> Callable[[str], list[dict[str, Any]]]:
    """Completion events from the SNS topic, through a subscribed queue, by job id."""
    facts = cloud.facts
    assert facts is not None
    sqs, sns = aws("sqs"), aws("sns")
    url = sqs.create_queue(QueueName="e2e-job-events")["QueueUrl"]
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

    def for_job(job_id: str) -> list[dict[str, Any]]:
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            if not messages:
                break
            for message in messages:
                seen.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return [e for e in seen if e["job"]["job_id"] == job_id]

    return for_job


@pytest.fixture(scope="module")
def callbacks() -> Iterator[Callbacks]:
    receiver = Callbacks()
    yield receiver
    receiver.server.shutdown()


def auth(cloud: LocalCloud) -> dict[str, str]:
    assert cloud.facts is not None
    return {"Authorization": f"Bearer {cloud.facts.demo_tenant_key}"}


def get_job(cloud: LocalCloud, job_id: str, headers: dict[str, str] | None = None) -> Any:
    assert cloud.facts is not None
    return http("GET", f"{cloud.facts.api_url}/v1/jobs/{job_id}", None, headers or auth(cloud))


def finished(cloud: LocalCloud, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        reply = get_job(cloud, job_id)
        if reply.status == 404:  # not ingested yet
            return None
        assert reply.status == 200, reply.body
        return reply.body if reply.body["status"] in TERMINAL else None

    body: dict[str, Any] = wait_for(done, timeout=timeout)
    return body


def in_status(cloud: LocalCloud, job_id: str, status: str, timeout: float = 30.0) -> Any:
    def reached() -> dict[str, Any] | None:
        body = get_job(cloud, job_id).body
        assert body["status"] == status or body["status"] not in TERMINAL, body
        return body if body["status"] == status else None

    return wait_for(reached, timeout=timeout)


def submit(cloud: LocalCloud, body: dict[str, Any], key: str | None = None) -> Any:
    assert cloud.facts is not None
    headers = auth(cloud) | ({"Idempotency-Key": key} if key else {})
    return http("POST", f"{cloud.facts.api_url}/v1/jobs", body, headers)


@pytest.fixture(scope="module")
def crashing_job(cloud: LocalCloud) -> str:
    """A triage job whose worker dies on the first delivery (submitted first: the
    redelivery after the 36 s visibility timeout overlaps the other tests)."""
    reply = submit(cloud, {"agent": "triage", "input": "CRASH-ONCE: where is order A-1001?"})
    assert reply.status == 202, reply.body
    job_id: str = reply.body["job_id"]
    return job_id


def test_a_worker_crash_leaves_the_job_running_under_its_lease(
    cloud: LocalCloud, crashing_job: str
) -> None:
    running = in_status(cloud, crashing_job, "running", timeout=15)
    assert running["attempts"] == 1 and running["steps"] == []


def test_http_job_succeeds_with_result_usage_cost_event_and_signed_callback(
    cloud: LocalCloud,
    aws: Callable[[str], Any],
    events: Callable[[str], list[dict[str, Any]]],
    callbacks: Callbacks,
) -> None:
    facts = cloud.facts
    assert facts is not None
    body = {
        "agent": "triage",
        "input": "I was billed twice for order A-1002",
        "metadata": {"ticket": "T-1"},
        "callback_url": callbacks.url,
    }
    first = submit(cloud, body, key="e2e-http-1")
    assert first.status == 202, first.body
    assert first.body["status"] == "queued" and first.body["job_id"].startswith("job_")
    again = submit(cloud, body, key="e2e-http-1")
    assert again.status == 202 and again.body["job_id"] == first.body["job_id"]
    reused = submit(cloud, {**body, "input": "something else"}, key="e2e-http-1")
    assert reused.status == 409 and reused.body["error"]["code"] == "idempotency_key_reused"

    job = finished(cloud, first.body["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["category"] in {"billing", "order_status", "other"}
    assert job["usage"]["input_tokens"] > 0 and job["cost_usd"] > 0
    assert job["metadata"] == {"ticket": "T-1"}
    assert [s["name"] for s in job["steps"]] == ["main"]
    assert job["steps"][0]["cost_usd"] == job["cost_usd"]

    (event,) = wait_for(lambda: events(job["job_id"]))
    assert event["type"] == "job.succeeded" and event["tenant_id"] == facts.demo_tenant_id
    (headers, raw) = wait_for(lambda: callbacks.for_job(job["job_id"]))[0]
    # Signed with the demo tenant's own key (its kid in the header), not a stack-wide one.
    assert f"kid={facts.demo_callback_kid}" in headers[SIGNATURE_HEADER]
    assert verify(
        raw, headers[SIGNATURE_HEADER], {facts.demo_callback_kid: facts.demo_callback_secret}
    )
    assert not verify(raw, headers[SIGNATURE_HEADER], {facts.demo_callback_kid: "another key"})
    assert json.loads(raw)["job"]["status"] == "succeeded"

    # Delivered by the callbacks function from its queue; the attempt is on the job.
    def delivered() -> Any:
        callback = get_job(cloud, job["job_id"]).body.get("callback") or {}
        return callback if callback.get("state") == "delivered" else None

    callback = wait_for(delivered)
    assert callback["attempts"] == 1 and callback["last_status"] == 204
    assert callback["delivered_at"]

    # Another tenant cannot see the job; unknown jobs and agents are 404s.
    _, other_key = TenantStore(facts.tables["tenants"], aws("dynamodb")).create("other")
    other = get_job(cloud, job["job_id"], {"Authorization": f"Bearer {other_key}"})
    assert other.status == 404 and other.body["error"]["code"] == "job_not_found"
    assert get_job(cloud, "job_" + "0" * 32).status == 404
    unknown = submit(cloud, {"agent": "nope", "input": "x"})
    assert unknown.status == 404 and unknown.body["error"]["code"] == "agent_not_found"


def test_plain_boto3_producer_job_succeeds_and_poison_goes_to_the_dlq_with_its_reason(
    cloud: LocalCloud, aws: Callable[[str], Any]
) -> None:
    facts = cloud.facts
    assert facts is not None
    sqs = aws("sqs")
    tenant = facts.demo_tenant_id
    good = {"version": "1", "tenant_id": tenant, "agent": "triage", "input": "Where is A-1001?"}
    entries = [
        {"Id": "good1", "MessageBody": json.dumps({**good, "idempotency_key": "e2e-sqs-1"})},
        {"Id": "notjson", "MessageBody": "this is not json {"},
        {"Id": "agent", "MessageBody": json.dumps({**good, "agent": "nope"})},
        {"Id": "tenant", "MessageBody": json.dumps({**good, "tenant_id": "no-such-tenant"})},
        {"Id": "version", "MessageBody": json.dumps({**good, "version": "2"})},
        {"Id": "good2", "MessageBody": json.dumps({**good, "idempotency_key": "e2e-sqs-2"})},
    ]
    sent = sqs.send_message_batch(QueueUrl=facts.queue_urls["ingest"], Entries=entries)
    assert len(sent["Successful"]) == len(entries)

    for key in ("e2e-sqs-1", "e2e-sqs-2"):
        job = finished(cloud, job_id_for(tenant, key))
        assert job["status"] == "succeeded", job
        assert job["result"]["category"] and job["cost_usd"] > 0 and job["usage"]["output_tokens"]

    # The operator's view: `stratus dlq list` shows each poison message with its reason.
    dlq = facts.queue_urls["ingest-dlq"]

    def listed() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = json.loads(
            stratus(cloud, "dlq", "list", "--queue", dlq, "--json")
        )
        return rows if len(rows) >= 4 else None

    rows = wait_for(listed, timeout=20)
    reasons = {row["reason"]: row for row in rows}
    assert set(reasons) == {
        "invalid_json",
        "unknown_agent",
        "unknown_tenant",
        "unsupported_version",
    }
    assert "nope" in reasons["unknown_agent"]["detail"]
    assert reasons["invalid_json"]["body"] == "this is not json {"

    # Redriving sends them back through ingest, which dead-letters them again, with reasons.
    moved = stratus(cloud, "dlq", "redrive", "--queue", dlq)
    assert "moved 4 message(s)" in moved and facts.queue_urls["ingest"] in moved
    again = wait_for(listed, timeout=20)
    assert {row["reason"] for row in again} == set(reasons)
    assert {row["body"] for row in again} == {row["body"] for row in rows}


def stratus(cloud: LocalCloud, *args: str) -> str:
    """Run the ``stratus`` CLI against the local cloud, as an operator would."""
    facts = cloud.facts
    assert facts is not None
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": facts.aws_endpoint_url,
        "AWS_REGION": facts.region,
        "AWS_DEFAULT_REGION": facts.region,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_triage_routes_a_job_to_the_specialist_through_its_queue(cloud: LocalCloud) -> None:
    reply = submit(cloud, {"agent": "triage", "input": "Where is my order A-1001?", "route": True})
    assert reply.status == 202
    parent = finished(cloud, reply.body["job_id"])
    assert parent["status"] == "succeeded" and parent["result"]["category"] == "order_status"
    assert parent["routed_to"]["agent"] == "order_status"
    child = finished(cloud, parent["routed_to"]["job_id"])
    assert child["status"] == "succeeded", child
    assert child["agent"] == "order_status" and child["parent_job_id"] == parent["job_id"]
    assert "in_transit" in str(child["result"])


def test_workflow_waits_for_approval_then_completes(
    cloud: LocalCloud, events: Callable[[str], list[dict[str, Any]]]
) -> None:
    facts = cloud.facts
    assert facts is not None
    reply = submit(
        cloud,
        {"agent": "researcher", "input": "Which carriers are fastest?", "require_approval": True},
    )
    assert reply.status == 202
    job_id = reply.body["job_id"]
    waiting = in_status(cloud, job_id, "waiting_approval", timeout=40)
    names = [s["name"] for s in waiting["steps"]]
    assert names[0] == "plan" and names[-1] == "review" and len(names) >= 4
    models = {s["name"]: s["model"] for s in waiting["steps"]}
    assert models["plan"] == models["review"] == "gpt-5" and models["research-0"] == "gpt-5-mini"
    assert waiting["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in waiting["steps"]))

    answer = http(
        "POST",
        f"{facts.api_url}/v1/jobs/{job_id}/approval",
        {"approved": True, "comment": "looks right"},
        auth(cloud),
    )
    assert answer.status == 200, answer.body
    job = finished(cloud, job_id)
    assert job["status"] == "succeeded", job
    assert set(job["result"]) == {"answer", "confidence", "gaps"}
    assert wait_for(lambda: events(job_id))[0]["type"] == "job.succeeded"
    again = http(
        "POST", f"{facts.api_url}/v1/jobs/{job_id}/approval", {"approved": True}, auth(cloud)
    )
    assert again.status == 409 and again.body["error"]["code"] == "job_not_waiting_approval"


def test_workflow_rejection_fails_the_job_cleanly(cloud: LocalCloud) -> None:
    facts = cloud.facts
    assert facts is not None
    reply = submit(cloud, {"agent": "researcher", "input": "Is it safe?", "require_approval": True})
    job_id = reply.body["job_id"]
    in_status(cloud, job_id, "waiting_approval", timeout=40)
    answer = http(
        "POST",
        f"{facts.api_url}/v1/jobs/{job_id}/approval",
        {"approved": False, "comment": "sources too weak"},
        auth(cloud),
    )
    assert answer.status == 200, answer.body
    job = finished(cloud, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "approval_rejected"
    assert job["error"]["message"] == "sources too weak"
    assert job["result"] is None and job["cost_usd"] > 0


def test_a_cancelled_job_stops(cloud: LocalCloud, aws: Callable[[str], Any]) -> None:
    facts = cloud.facts
    assert facts is not None
    reply = submit(
        cloud, {"agent": "researcher", "input": "Cancel me later", "require_approval": True}
    )
    job_id = reply.body["job_id"]
    in_status(cloud, job_id, "waiting_approval", timeout=40)
    cancelled = http("POST", f"{facts.api_url}/v1/jobs/{job_id}/cancel", None, auth(cloud))
    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["status"] == "cancelled"
    sfn = aws("stepfunctions")
    arn = f"{facts.state_machine_arns['researcher']}:{job_id}".replace(
        ":stateMachine:", ":execution:"
    )
    # AWS reports ABORTED; moto ends the stopped execution through its Catch (FAILED).
    status = wait_for(
        lambda: {"ABORTED", "FAILED"} & {sfn.describe_execution(executionArn=arn)["status"]}
    )
    assert status
    job = get_job(cloud, job_id).body
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled"
    assert "review" in [s["name"] for s in job["steps"]]
    late = http(
        "POST", f"{facts.api_url}/v1/jobs/{job_id}/approval", {"approved": True}, auth(cloud)
    )
    assert late.status == 409
    twice = http("POST", f"{facts.api_url}/v1/jobs/{job_id}/cancel", None, auth(cloud))
    assert twice.status == 409 and twice.body["error"]["code"] == "job_already_finished"


def test_the_crashed_job_finishes_once_on_redelivery(
    cloud: LocalCloud, crashing_job: str, events: Callable[[str], list[dict[str, Any]]]
) -> None:
    # The visibility timeout is 6 x 6 s: the message comes back and the lease has expired.
    job = finished(cloud, crashing_job, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert [s["name"] for s in job["steps"]] == ["main"]  # usage and cost counted once
    assert job["usage"] == job["steps"][0]["usage"]
    assert len(wait_for(lambda: events(crashing_job))) == 1
    time.sleep(1)
    assert len(events(crashing_job)) == 1  # completed once, announced once
    # The model answered before the crash; the redelivery replays that completion
    # from the call ledger instead of paying the provider again.
    assert cloud.fake_model is not None
    asked = [
        r
        for r in cloud.fake_model.requests
        if any("CRASH-ONCE" in str(m.get("content")) for m in r.body.get("messages", []))
    ]
    assert len(asked) == 1

"""Bound producers and per-tenant callback keys on the local cloud (issue 14).

A producer is identified by its access key here (the local cloud's ``SenderId``): the
dev stage binds the demo's access keys, so a plain boto3 producer with another key
cannot submit for the demo tenant (its message lands in the ingest DLQ with
``producer_not_allowed``) while the demo's key still can. Callbacks are signed with
the job's tenant's own key: they verify with that tenant's keys (both during a
rollover made over the API) and never with another tenant's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.config import load_stage
from infra.local.cloud import LocalCloud
from infra.local.demo import http
from stratus.ddb import Table
from stratus.jobs import SIGNATURE_HEADER, job_id_for, verify
from stratus.signing_keys import DynamoSigningKeyStore, SigningKeys
from stratus.tenants import TenantStore
from tests.e2e.helpers import offline_environ, wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")
ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A callback receiver on 127.0.0.1 that records what it is sent."""

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
    with LocalCloud(
        stage=load_stage("dev"),
        api_port=0,
        aws_port=0,
        state_file=None,
        log_sink=lambda line: None,
        environ=offline_environ(),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def client(cloud: LocalCloud, service: str, access_key: str) -> Any:
    facts = cloud.facts
    assert facts is not None
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key="x", region_name=facts.region
    )
    return session.client(service, endpoint_url=facts.aws_endpoint_url)  # type: ignore[call-overload]


def auth(cloud: LocalCloud) -> dict[str, str]:
    assert cloud.facts is not None
    return {"Authorization": f"Bearer {cloud.facts.demo_tenant_key}"}


def job(cloud: LocalCloud, job_id: str) -> Any:
    assert cloud.facts is not None
    return http("GET", f"{cloud.facts.api_url}/v1/jobs/{job_id}", None, auth(cloud))


def producer_message(tenant: str, key: str, **extra: Any) -> str:
    return json.dumps(
        {
            "version": "1",
            "tenant_id": tenant,
            "agent": "triage",
            "input": "Where is my order A-1001?",
            "idempotency_key": key,
            **extra,
        }
    )


def dead_lettered(cloud: LocalCloud, key: str) -> dict[str, Any] | None:
    """The ingest DLQ message whose body has ``idempotency_key`` ``key`` (deleted once seen)."""
    assert cloud.facts is not None
    sqs = client(cloud, "sqs", "x")
    url = cloud.facts.queue_urls["ingest-dlq"]
    got = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    for message in got.get("Messages", []):
        body = message["Body"]
        if key in body:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            return dict(message)
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return None


def test_a_producer_with_another_access_key_cannot_submit_for_the_demo_tenant(
    cloud: LocalCloud,
) -> None:
    facts = cloud.facts
    assert facts is not None
    ingest = facts.queue_urls["ingest"]
    client(cloud, "sqs", "intruder").send_message(
        QueueUrl=ingest, MessageBody=producer_message(facts.demo_tenant_id, "e2e-intruder")
    )
    dead = wait_for(lambda: dead_lettered(cloud, "e2e-intruder"), timeout=30)
    attributes = dead["MessageAttributes"]
    assert attributes["stratus_reason"]["StringValue"] == "producer_not_allowed"
    assert "intruder" in attributes["stratus_detail"]["StringValue"]
    assert job(cloud, job_id_for(facts.demo_tenant_id, "e2e-intruder")).status == 404

    # The demo's own producer (its access key is bound) keeps working.
    client(cloud, "sqs", "demo").send_message(
        QueueUrl=ingest, MessageBody=producer_message(facts.demo_tenant_id, "e2e-demo")
    )
    job_id = job_id_for(facts.demo_tenant_id, "e2e-demo")
    submitted = wait_for(lambda: job(cloud, job_id).status == 200, timeout=30)
    assert submitted


def key_store(cloud: LocalCloud) -> DynamoSigningKeyStore:
    """The local cloud's callback keys table, as an operator's script reads it."""
    facts = cloud.facts
    assert facts is not None
    return DynamoSigningKeyStore(
        Table(facts.tables["callback_keys"], client(cloud, "dynamodb", "x"))
    )


def _rotate_with_the_cli(cloud: LocalCloud, tenant: str) -> dict[str, Any]:
    facts = cloud.facts
    assert facts is not None
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": facts.aws_endpoint_url,
        "AWS_ACCESS_KEY_ID": "operator",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": facts.region,
    }
    table = facts.tables["callback_keys"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.callback_keys_cli",
            "rotate",
            "--tenant",
            tenant,
            "--table",
            table,
            "--audit-table",
            facts.tables["audit"],
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_callbacks_verify_with_the_tenants_key_and_not_with_another_tenants(
    cloud: LocalCloud, receiver: Receiver
) -> None:
    facts = cloud.facts
    assert facts is not None
    dynamodb = client(cloud, "dynamodb", "x")
    keys = SigningKeys(key_store(cloud))
    # The demo tenant (made before it had keys) gets its own by rotation: the migration.
    demo_key = _rotate_with_the_cli(cloud, facts.demo_tenant_id)
    other, _ = TenantStore(facts.tables["tenants"], dynamodb).create("other")
    other_key = keys.create_for(other.tenant_id)
    assert demo_key["kid"] != other_key.kid

    def callback_of(key: str) -> tuple[dict[str, str], bytes]:
        reply = http(
            "POST",
            f"{facts.api_url}/v1/jobs",
            {"agent": "triage", "input": "Where is A-1001?", "callback_url": receiver.url},
            {**auth(cloud), "Idempotency-Key": key},
        )
        assert reply.status == 202, reply.body
        found: list[tuple[dict[str, str], bytes]] = wait_for(
            lambda: receiver.for_job(reply.body["job_id"]), timeout=60
        )
        return found[0]

    headers, raw = callback_of("e2e-cb-1")
    header = headers[SIGNATURE_HEADER]
    assert f"kid={demo_key['kid']}," in header
    assert verify(raw, header, {demo_key["kid"]: demo_key["secret"]})
    # Tenant B's receiver, with B's keys, cannot verify the callback meant for the demo.
    assert not verify(raw, header, keys.secrets_for(other.tenant_id))
    assert not verify(raw, header, {other_key.kid: other_key.secret})

    # A rotation over the API: the new key signs; during the grace both keys verify.
    rotated = http(
        "POST", f"{facts.api_url}/v1/callback-keys/rotate", {"grace_s": 600}, auth(cloud)
    )
    assert rotated.status == 201, rotated.body
    # (a demo key made at provisioning, still in its grace, may be among them too)
    assert demo_key["kid"] in [p["kid"] for p in rotated.body["previous"]]
    headers, raw = callback_of("e2e-cb-2")
    header = headers[SIGNATURE_HEADER]
    assert f"kid={rotated.body['kid']}," in header
    both = {demo_key["kid"]: demo_key["secret"], rotated.body["kid"]: rotated.body["secret"]}
    assert verify(raw, header, both)
    assert verify(raw, header, keys.secrets_for(facts.demo_tenant_id))
    assert not verify(raw, header, {demo_key["kid"]: demo_key["secret"]})
    assert not verify(raw, header, keys.secrets_for(other.tenant_id))
    # The secrets are nowhere in the job record.
    record = json.dumps(job(cloud, json.loads(raw)["job"]["job_id"]).body)
    for secret in (demo_key["secret"], rotated.body["secret"], other_key.secret):
        assert secret not in record and secret not in raw.decode()

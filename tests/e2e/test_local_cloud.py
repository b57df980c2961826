"""The local cloud end to end: started on ephemeral ports, driven with real clients."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.local.cloud import Extras, LocalCloud, QueueSpec, StateMachineSpec
from infra.local.demo import http
from infra.local.lambda_runtime import FunctionConfig
from tests.e2e.helpers import offline_environ, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("local-cloud")  # one moto server per process at a time


WORKFLOW = json.dumps(
    {
        "StartAt": "Double",
        "States": {
            "Double": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "${Function:e2e-task}", "Payload.$": "$"},
                "OutputPath": "$.Payload",
                "End": True,
            }
        },
    }
)


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    env = {"E2E_TABLE": "stratus-dev-orders"}
    extras = Extras(
        functions=[
            FunctionConfig(
                name="e2e-consumer",
                handler="tests.e2e.handlers.sqs_consumer",
                environment=env,
                timeout_s=10,
            ),
            FunctionConfig(
                name="e2e-task",
                handler="tests.e2e.handlers.workflow_task",
                environment=env,
                timeout_s=10,
            ),
        ],
        queues=[
            QueueSpec(
                name="e2e-ingest",
                # Longer than a loaded machine's first invoke (a worker process starting),
                # so only the failed record is seen again, as on AWS.
                visibility_timeout_s=5,
                max_receive_count=2,
                function="e2e-consumer",
                batch_size=10,
            )
        ],
        state_machines=[StateMachineSpec(name="e2e-double", definition=WORKFLOW)],
    )
    environ = offline_environ()
    with LocalCloud(
        api_port=0,
        aws_port=0,
        state_file=None,
        extras=extras,
        log_sink=lambda line: None,
        environ=environ,
    ) as running:
        yield running


def test_triage_answers_over_http_with_the_demo_key(cloud: LocalCloud) -> None:
    facts = cloud.facts
    assert facts is not None and facts.fake_model
    reply = http(
        "POST",
        f"{facts.api_url}/v1/agents/triage/invoke",
        {"input": "Where is my order A-1001?"},
        {"Authorization": f"Bearer {facts.demo_tenant_key}"},
    )
    assert reply.status == 200, reply.body
    assert reply.body["output"]["category"] == "order_status"
    assert reply.body["cost_usd"] > 0


def test_order_status_reads_the_demo_tenants_orders(cloud: LocalCloud) -> None:
    facts = cloud.facts
    assert facts is not None
    reply = http(
        "POST",
        f"{facts.api_url}/v1/agents/order_status/invoke",
        {"input": "Where is my order A-1001?"},
        {"Authorization": f"Bearer {facts.demo_tenant_key}"},
    )
    assert reply.status == 200, reply.body
    assert "in_transit" in reply.body["output"]


def test_gateway_errors_have_the_documented_shape(cloud: LocalCloud) -> None:
    facts = cloud.facts
    assert facts is not None
    url = f"{facts.api_url}/v1/agents/triage/invoke"
    assert http("POST", url, {"input": "x"}).status == 401
    bad = http("POST", url, {"input": "x"}, {"Authorization": "Bearer sk-stratus-nope"})
    assert bad.status == 401 and bad.body["error"]["code"] == "unauthorized"
    auth = {"Authorization": f"Bearer {facts.demo_tenant_key}"}
    invalid = http("POST", url, {"text": "x"}, auth)
    assert invalid.status == 422 and invalid.body["error"]["code"] == "validation_error"
    unknown = http("POST", f"{facts.api_url}/v1/agents/nope/invoke", {"input": "x"}, auth)
    assert unknown.status == 404 and unknown.body["error"]["code"] == "agent_not_found"
    nowhere = http("GET", f"{facts.api_url}/nowhere")
    assert nowhere.status == 404 and nowhere.body["error"]["code"] == "not_found"
    health = http("GET", f"{facts.api_url}/v1/health")
    assert health.status == 200 and health.body["status"] == "ok", health.body


def test_sessions_work_unchanged_through_the_local_cloud(cloud: LocalCloud) -> None:
    facts = cloud.facts
    assert facts is not None
    auth = {"Authorization": f"Bearer {facts.demo_tenant_key}"}
    base = f"{facts.api_url}/v1/agents/support/sessions"
    created = http("POST", base, {"metadata": {"channel": "chat"}}, auth)
    assert created.status == 201, created.body
    session = f"{base}/{created.body['session_id']}"
    for turn, text in enumerate(["Hi, where is my order A-1001?", "And when will it arrive?"], 1):
        reply = http("POST", f"{session}/messages", {"message": text}, auth)
        assert reply.status == 200, reply.body
        assert reply.body["turn"] == turn
    history = http("GET", session, None, auth)
    assert history.status == 200, history.body
    assert [m["role"] for m in history.body["messages"]] == ["user", "assistant"] * 2
    assert http("DELETE", session, None, auth).status == 204
    assert http("GET", session, None, auth).status == 404


def test_sqs_messages_reach_the_mapped_function_and_failures_redrive(
    cloud: LocalCloud, aws: Callable[[str], Any]
) -> None:
    facts = cloud.facts
    assert facts is not None
    sqs = aws("sqs")
    queue = facts.queue_urls["e2e-ingest"]
    for body in ("ok-1", "ok-2", "fail-1"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    table = aws("dynamodb")

    def deliveries(body: str) -> int:
        item = table.get_item(
            TableName="stratus-dev-orders", Key={"tenant_id": {"S": "e2e"}, "order_id": {"S": body}}
        )
        return int(item.get("Item", {}).get("deliveries", {}).get("N", 0))

    dlq = facts.queue_urls["e2e-ingest-dlq"]

    def in_dlq() -> list[str]:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [m["Body"] for m in got.get("Messages", [])]

    assert wait_for(in_dlq, timeout=30) == ["fail-1"]
    # The failed record was redelivered up to maxReceiveCount; the others ran once.
    assert deliveries("fail-1") == 2
    assert deliveries("ok-1") == 1 and deliveries("ok-2") == 1


def test_a_state_machine_task_runs_a_real_handler(
    cloud: LocalCloud, aws: Callable[[str], Any]
) -> None:
    facts = cloud.facts
    assert facts is not None
    sfn = aws("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=facts.state_machine_arns["e2e-double"], input=json.dumps({"n": 21})
    )["executionArn"]

    def finished() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=arn)
        return described if described["status"] != "RUNNING" else None

    result = wait_for(finished, timeout=30)
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"doubled": 42, "function": "e2e-task"}


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_stratus_dev_runs_until_ctrl_c_and_cleans_up(tmp_path: Path) -> None:
    state = tmp_path / "local.json"
    env = offline_environ()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "dev",
            "--api-port",
            "0",
            "--aws-port",
            "0",
            "--state-file",
            str(state),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(state.exists, timeout=60)
        facts = json.loads(state.read_text())
        assert set(facts) >= {
            "api_url",
            "aws_endpoint_url",
            "region",
            "demo_tenant_key",
            "queue_urls",
            "state_machine_arns",
        }
        reply = http(
            "POST",
            f"{facts['api_url']}/v1/agents/triage/invoke",
            {"input": "I was billed twice"},
            {"Authorization": f"Bearer {facts['demo_tenant_key']}"},
        )
        assert reply.status == 200, reply.body
        tables = boto3.client(
            "dynamodb",
            endpoint_url=facts["aws_endpoint_url"],
            region_name=facts["region"],
            aws_access_key_id="x",
            aws_secret_access_key="x",
        ).list_tables()["TableNames"]
        assert {"stratus-dev-tenants", "stratus-dev-idempotency", "stratus-dev-orders"} <= set(
            tables
        )
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "OFFLINE FAKE MODEL" in output
    assert "stratus-dev-agent-triage" in output  # function logs stream with their name
    assert not state.exists()
    assert not port_open(facts["api_url"]) and not port_open(facts["aws_endpoint_url"])


def test_make_demo_passes() -> None:
    env = offline_environ()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All demo steps passed." in done.stdout
    assert "triage" in done.stdout and "cost USD" in done.stdout

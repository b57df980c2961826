"""The lease sweep on the local cloud: a worker process SIGKILLed halfway through a job.

The triage worker runs wrapped (``tests.e2e.sweep_handlers.killed_worker``): it kills
its own process with SIGKILL after the model answered and before the step is
recorded. The stage's job worker timeout is 10 s (room for a worker process to start
on a loaded machine before it calls the model), so a lease lasts about 15 s, while
the queue's visibility timeout (6x) is 60 s: the sweep, triggered by the test right
after the lease ran out (the scheduled one is off here), is what brings the job back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from infra.config import load_stage
from infra.local.cloud import Extras, LocalCloud
from infra.local.demo import http
from tests.e2e.helpers import offline_environ, wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    stage = load_stage("dev").model_copy(update={"job_worker_timeout_s": 10})
    extras = Extras(handler_overrides={"worker:triage": "tests.e2e.sweep_handlers.killed_worker"})
    with LocalCloud(
        stage=stage,
        api_port=0,
        aws_port=0,
        state_file=None,
        extras=extras,
        log_sink=lambda line: None,
        environ=offline_environ(),
        sweep_interval_s=0,
        function_env={"STRATUS_JOB_SWEEP_GRACE_S": "0"},
    ) as running:
        yield running


def api(cloud: LocalCloud, method: str, path: str, body: Any = None) -> Any:
    facts = cloud.facts
    assert facts is not None
    headers = {"Authorization": f"Bearer {facts.demo_tenant_key}"}
    return http(method, f"{facts.api_url}{path}", body, headers)


def job_item(cloud: LocalCloud, aws: Callable[[str], Any], job_id: str) -> dict[str, Any]:
    facts = cloud.facts
    assert facts is not None
    table = aws("dynamodb")
    item = table.get_item(
        TableName=facts.tables["jobs"], Key={"job_id": {"S": job_id}, "sk": {"S": "JOB"}}
    )["Item"]
    return {k: next(iter(v.values())) for k, v in item.items()}


def killed_and_expired(cloud: LocalCloud, aws: Callable[[str], Any], job_id: str) -> None:
    """Wait until the job's worker was killed (running, no step) and its lease ran out."""

    def running() -> dict[str, Any] | None:
        reply = api(cloud, "GET", f"/v1/jobs/{job_id}")
        body = reply.body if reply.status == 200 else {}
        return body if body.get("status") == "running" else None

    wait_for(running, timeout=30)
    lease = Decimal(job_item(cloud, aws, job_id)["lease_until"])
    time.sleep(max(0.0, float(lease) - time.time()) + 0.5)


def provider_calls(cloud: LocalCloud, marker: str) -> int:
    assert cloud.fake_model is not None
    return sum(
        1
        for r in cloud.fake_model.requests
        if any(marker in str(m.get("content")) for m in r.body.get("messages", []))
    )


def test_the_sweep_requeues_a_killed_workers_job_which_then_finishes_once(
    cloud: LocalCloud, aws: Callable[[str], Any]
) -> None:
    reply = api(cloud, "POST", "/v1/jobs", {"agent": "triage", "input": "SIGKILL-FIRST: A-1001?"})
    assert reply.status == 202, reply.body
    job_id = reply.body["job_id"]
    killed_and_expired(cloud, aws, job_id)
    assert provider_calls(cloud, "SIGKILL-FIRST") == 1  # paid before the kill

    report = cloud.sweep()
    assert report["requeued"] == 1, report

    def done() -> Any:
        body = api(cloud, "GET", f"/v1/jobs/{job_id}").body
        return body if body["status"] in TERMINAL else None

    job = wait_for(done, timeout=20)  # well before the 60 s visibility timeout
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2 and [s["name"] for s in job["steps"]] == ["main"]
    assert job["usage"] == job["steps"][0]["usage"]  # counted once
    # The step the killed worker paid for is replayed from the call ledger.
    assert provider_calls(cloud, "SIGKILL-FIRST") == 1
    assert cloud.sweep()["seen"] == 0


def test_a_job_whose_worker_is_always_killed_fails_with_lease_expired(
    cloud: LocalCloud, aws: Callable[[str], Any]
) -> None:
    reply = api(cloud, "POST", "/v1/jobs", {"agent": "triage", "input": "SIGKILL-ALWAYS: x"})
    job_id = reply.body["job_id"]
    for _ in range(10):
        killed_and_expired(cloud, aws, job_id)
        cloud.sweep()
        status = api(cloud, "GET", f"/v1/jobs/{job_id}").body
        if status["status"] in TERMINAL:
            break
    assert status["status"] == "failed", status
    assert status["error"]["code"] == "lease_expired"
    assert status["attempts"] >= 3
    assert cloud.sweep()["seen"] == 0

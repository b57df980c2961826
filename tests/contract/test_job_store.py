"""The job store port: the DynamoDB adapter (on moto) and the in-memory fake agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stratus import ddb
from stratus.errors import IdempotencyKeyReused
from stratus.jobs import DynamoJobStore, JobRequest, JobStore, MemoryJobStore
from stratus.usage import Usage
from tests.tables import create_tables


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Subject:
    store: JobStore
    clock: Clock


@pytest.fixture(params=["memory", "dynamodb"])
def subject(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[Subject]:
    clock = Clock()
    if request.param == "memory":
        yield Subject(MemoryJobStore(clock=clock), clock)
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        table = ddb.Table(create_tables(client)["jobs"], client)
        yield Subject(DynamoJobStore(table, clock=clock), clock)


REQUEST = JobRequest(agent="triage", input={"q": "A-1001"}, metadata={"m": 1}, max_cost_usd=0.5)


def create(store: JobStore, job_id: str = "job_1", request: JobRequest = REQUEST) -> dict[str, Any]:
    job, created = store.create(job_id=job_id, tenant_id="t1", request=request, source="api")
    assert created
    return job


def test_create_get_and_the_same_id_again(subject: Subject) -> None:
    store = subject.store
    job = create(store)
    got = store.get("job_1")
    assert got is not None and got["status"] == "queued" and got["tenant_id"] == "t1"
    assert json.loads(got["input"]) == {"q": "A-1001"}
    assert got["max_cost_usd"] == Decimal("0.5") and got["attempts"] == 0
    assert got["created_at"] == job["created_at"]
    assert got["expires_at"] == int(subject.clock.now) + 30 * 24 * 3600
    again, created = store.create(job_id="job_1", tenant_id="t1", request=REQUEST, source="sqs")
    assert not created and again["source"] == "api"
    other = JobRequest(agent="triage", input="something else")
    with pytest.raises(IdempotencyKeyReused):
        store.create(job_id="job_1", tenant_id="t1", request=other, source="api")
    assert store.get("job_missing") is None


def test_claim_under_a_lease_and_takeover(subject: Subject) -> None:
    store, clock = subject.store, subject.clock
    create(store)
    claimed = store.claim("job_1", lease_s=60)
    assert claimed is not None and claimed["status"] == "running" and claimed["attempts"] == 1
    assert claimed["lease_until"] == Decimal(str(clock.now)) + 60
    clock.now += 30
    assert store.claim("job_1", lease_s=60) is None  # the lease is live
    clock.now += 31
    taken = store.claim("job_1", lease_s=60)
    assert taken is not None and taken["attempts"] == 2
    store.release("job_1")
    released = store.get("job_1")
    assert released is not None and released["lease_until"] == 0
    assert store.claim("job_1", lease_s=60) is not None  # released: claimable at once
    assert store.claim("job_missing", lease_s=60) is None


def test_finish_happens_once(subject: Subject) -> None:
    store = subject.store
    create(store)
    assert store.finish("job_1", "succeeded", result={"a": 1}) is None  # still queued
    store.claim("job_1", lease_s=60)
    done = store.finish("job_1", "succeeded", result={"a": 1}, extra={"routed_to": {"agent": "x"}})
    assert done is not None and done["status"] == "succeeded" and done["lease_until"] == 0
    assert json.loads(done["result"]) == {"a": 1} and done["routed_to"] == {"agent": "x"}
    assert store.finish("job_1", "failed", error={"code": "late"}) is None
    got = store.get("job_1")
    assert got is not None and got["status"] == "succeeded" and "error" not in got
    assert not got.get("notified")
    store.mark_notified("job_1")
    notified = store.get("job_1")
    assert notified is not None and notified["notified"] is True


def test_a_queued_job_finishes_only_when_queued_is_allowed(subject: Subject) -> None:
    store = subject.store
    create(store)
    done = store.finish(
        "job_1",
        "cancelled",
        error={"code": "cancelled", "message": "m"},
        from_statuses=("queued", "running", "waiting_approval"),
    )
    assert done is not None and done["error"] == {"code": "cancelled", "message": "m"}
    assert store.claim("job_1", lease_s=60) is None  # a cancelled job never runs


def test_workflow_transitions(subject: Subject) -> None:
    store = subject.store
    create(store)
    assert store.set_execution("job_1", "arn:x") is None  # not running
    store.claim("job_1", lease_s=60)
    started = store.set_execution("job_1", "arn:x")
    assert started is not None and started["execution_arn"] == "arn:x"
    assert started["lease_until"] == 0
    assert store.answer_approval("job_1", True, "") is None  # not waiting
    waiting = store.await_approval("job_1", "token")
    assert waiting is not None and waiting["status"] == "waiting_approval"
    assert waiting["task_token"] == "token"
    assert store.await_approval("job_1", "token") is None
    answered = store.answer_approval("job_1", False, "no")
    assert answered is not None and answered["status"] == "running"
    assert answered["task_token"] == ""
    assert answered["approval"]["approved"] is False and answered["approval"]["comment"] == "no"
    assert store.answer_approval("job_1", True, "yes") is None  # one answer only
    assert store.finish("job_1", "failed", error={"code": "approval_rejected"}) is not None


def test_steps_are_recorded_once_and_add_up(subject: Subject) -> None:
    store = subject.store
    create(store)
    usage = Usage(input_tokens=100, cached_input_tokens=20, output_tokens=10, reasoning_tokens=4)
    assert store.record_step(
        "job_1", "research-1", usage=usage, cost_usd=Decimal("0.25"), model="m", output={"f": 1}
    )
    assert not store.record_step("job_1", "research-1", usage=usage, cost_usd=Decimal("0.25"))
    assert store.record_step("job_1", "plan", usage=usage, cost_usd=Decimal("0.125"))
    job = store.get("job_1")
    assert job is not None and job["cost_usd"] == Decimal("0.375")
    assert (job["input_tokens"], job["cached_input_tokens"]) == (200, 40)
    assert (job["output_tokens"], job["reasoning_tokens"]) == (20, 8)
    steps = store.steps("job_1")
    assert [s["sk"] for s in steps] == ["STEP#plan", "STEP#research-1"]
    assert steps[1]["model"] == "m" and steps[1]["status"] == "succeeded"
    assert store.step_output("job_1", "research-1") == {"f": 1}
    assert store.step_output("job_1", "plan") is None
    assert store.step_output("job_1", "review") is None
    assert not store.record_step("job_missing", "main", usage=usage, cost_usd=Decimal(1))
    assert store.steps("job_missing") == []


def test_the_lease_index_holds_only_leased_jobs(subject: Subject) -> None:
    """The sweep's sparse index (a real GSI on moto): claimed jobs in, finished ones out."""
    store, clock = subject.store, subject.clock
    for job_id in ("job_a", "job_b", "job_c", "job_d"):
        create(store, job_id)
    for job_id in ("job_a", "job_b", "job_c"):
        assert store.claim(job_id, lease_s=60) is not None
    assert store.finish("job_b", "succeeded", result="ok") is not None
    assert store.set_execution("job_c", "arn:x") is not None
    assert store.expired_leases(clock.now) == []  # live leases only
    clock.now += 61
    (expired,) = store.expired_leases(clock.now)
    assert expired["job_id"] == "job_a" and expired["status"] == "running"
    finished = store.get("job_b")
    assert finished is not None and "lease_shard" not in finished


def test_requeue_and_expire_are_conditional_on_the_lease_seen(subject: Subject) -> None:
    store, clock = subject.store, subject.clock
    create(store)
    store.claim("job_1", lease_s=60)
    clock.now += 61
    (seen,) = store.expired_leases(clock.now)
    moved = store.requeue_expired("job_1", seen["lease_until"], 300)
    assert moved is not None and moved["status"] == "queued" and moved["sweeps"] == 1
    assert moved["lease_until"] == Decimal(str(clock.now)) + 300
    # A second sweeper that saw the same lease loses.
    assert store.requeue_expired("job_1", seen["lease_until"], 300) is None
    assert store.expire("job_1", seen["lease_until"], {"code": "lease_expired"}) is None
    assert store.expired_leases(clock.now) == []  # held
    clock.now += 301
    (held,) = store.expired_leases(clock.now)
    failed = store.expire("job_1", held["lease_until"], {"code": "lease_expired", "message": "m"})
    assert failed is not None and failed["status"] == "failed" and "lease_shard" not in failed
    assert failed["error"] == {"code": "lease_expired", "message": "m"}
    assert store.expired_leases(clock.now + 1000) == []


def test_release_holds_the_lease_for_the_backoff(subject: Subject) -> None:
    store, clock = subject.store, subject.clock
    create(store)
    store.claim("job_1", lease_s=600)
    store.release("job_1", hold_s=20)
    assert store.claim("job_1", lease_s=60) is None  # the backoff has not passed
    clock.now += 21
    assert store.claim("job_1", lease_s=60) is not None


def test_non_ascii_text_is_stored_unescaped(subject: Subject) -> None:
    store = subject.store
    text = "漢" * 30_000  # 90 KB as UTF-8 (as \\uXXXX escapes: 180 KB)
    create(store, request=JobRequest(agent="triage", input=text, metadata={"city": "東京"}))
    got = store.get("job_1")
    assert got is not None and got["input"] == json.dumps(text, ensure_ascii=False)
    assert "東京" in got["metadata"]
    store.claim("job_1", lease_s=60)
    done = store.finish("job_1", "succeeded", result=text)
    assert done is not None and json.loads(done["result"]) == text

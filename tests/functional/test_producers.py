"""Bound producers, in-process against moto (issue 14): the ingest handler maps each
message's SenderId to the tenants it may submit for; any other tenant's message goes to
the ingest DLQ with ``stratus_reason=producer_not_allowed`` and never becomes a job."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from infra.local.fake_model import FakeModelServer
from stratus.jobs import job_id_for
from stratus.tenants import TenantStore
from tests.functional.test_jobs import drain, jobs, serve, store
from tests.support import FakeLambdaContext, load_event

__all__ = ["jobs"]  # the fixture, shared with test_jobs

PARTNER = "AROAPARTNERROLEID0001"
ACCOUNT = "123456789012"  # the sample event's queue account


def message(tenant: str, key: str) -> str:
    return json.dumps(
        {
            "version": "1",
            "tenant_id": tenant,
            "agent": "triage",
            "input": "Hi",
            "idempotency_key": key,
        }
    )


def event(*records: tuple[str, str]) -> dict[str, Any]:
    """(SenderId, body) pairs as the ingest queue's Lambda event (from the sample)."""
    template = load_event("sqs/ingest_batch.json")["Records"][0]
    out = []
    for index, (sender, body) in enumerate(records):
        record = copy.deepcopy(template)
        record.update(messageId=f"m-{index}", body=body)
        record["attributes"]["SenderId"] = sender
        out.append(record)
    return {"Records": out}


def dead_letters(jobs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The DLQ's messages by their source message id."""
    return {
        m["MessageAttributes"]["stratus_source_message_id"]["StringValue"]: m
        for m in drain(jobs, jobs["dlq"])
    }


@pytest.fixture
def tenants(jobs: dict[str, Any]) -> tuple[str, str]:
    other, _ = TenantStore(jobs["tables"]["tenants"]).create("other")
    return jobs["tenant"], other.tenant_id


def test_a_bound_producer_submits_for_its_tenants_only(
    jobs: dict[str, Any],
    tenants: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fake_model: FakeModelServer,
) -> None:
    from functions.handlers import ingest

    mine, other = tenants
    monkeypatch.setenv("STRATUS_PRODUCERS", json.dumps({PARTNER: [mine]}))
    serve(monkeypatch, "")
    result = ingest.lambda_handler(
        event(
            (f"{PARTNER}:etl-session-1", message(mine, "k-bound")),  # its tenant: a job
            (f"{PARTNER}:etl-session-2", message(other, "k-other")),  # another tenant
            ("AIDAANOTHERUSERID0001", message(mine, "k-stranger")),  # an unbound sender
            (f"{PARTNER}:s", message("no-such-tenant", "k-unknown")),  # before unknown_tenant
        ),
        FakeLambdaContext(),
    )
    assert result == {"batchItemFailures": []}  # poison never fails the batch
    job = store(jobs).get(job_id_for(mine, "k-bound"))
    assert job is not None and job["status"] == "queued" and job["tenant_id"] == mine
    for tenant, key in ((other, "k-other"), (mine, "k-stranger")):
        assert store(jobs).get(job_id_for(tenant, key)) is None
    poisoned = dead_letters(jobs)
    assert set(poisoned) == {"m-1", "m-2", "m-3"}
    for dead in poisoned.values():
        attributes = dead["MessageAttributes"]
        assert attributes["stratus_reason"]["StringValue"] == "producer_not_allowed"
        # The detail names the sender, not which tenants exist.
        assert "no-such-tenant" not in attributes["stratus_detail"]["StringValue"]
    assert json.loads(poisoned["m-1"]["Body"])["tenant_id"] == other
    (queued,) = drain(jobs, jobs["queues"]["triage"])
    assert json.loads(queued["Body"])["job_id"] == job["job_id"]


def test_a_wildcard_binding_admits_every_tenant(
    jobs: dict[str, Any],
    tenants: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fake_model: FakeModelServer,
) -> None:
    from functions.handlers import ingest

    mine, other = tenants
    monkeypatch.setenv("STRATUS_PRODUCERS", json.dumps({PARTNER: ["*"]}))
    serve(monkeypatch, "")
    ingest.lambda_handler(
        event((PARTNER, message(mine, "w-1")), (PARTNER, message(other, "w-2"))),
        FakeLambdaContext(),
    )
    assert store(jobs).get(job_id_for(mine, "w-1")) is not None
    assert store(jobs).get(job_id_for(other, "w-2")) is not None
    assert dead_letters(jobs) == {}


def test_with_no_producers_configured_only_the_account_root_may_submit(
    jobs: dict[str, Any],
    tenants: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fake_model: FakeModelServer,
) -> None:
    from functions.handlers import ingest

    mine, _ = tenants
    monkeypatch.setenv("STRATUS_PRODUCERS", "{}")
    serve(monkeypatch, "")
    ingest.lambda_handler(
        event(
            (ACCOUNT, message(mine, "r-1")),
            (PARTNER, message(mine, "r-2")),
            ("", message(mine, "r-3")),
        ),
        FakeLambdaContext(),
    )
    assert store(jobs).get(job_id_for(mine, "r-1")) is not None
    assert store(jobs).get(job_id_for(mine, "r-2")) is None
    reasons = {
        k: m["MessageAttributes"]["stratus_reason"]["StringValue"]
        for k, m in dead_letters(jobs).items()
    }
    assert reasons == {"m-1": "producer_not_allowed", "m-2": "producer_not_allowed"}


def test_an_unbound_message_costs_no_dynamodb_round_trip(
    jobs: dict[str, Any],
    tenants: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fake_model: FakeModelServer,
) -> None:
    from bench.roundtrips import recording
    from functions.handlers import ingest

    mine, _ = tenants
    monkeypatch.setenv("STRATUS_PRODUCERS", json.dumps({PARTNER: [mine]}))
    serve(monkeypatch, "")
    with recording() as trace:
        ingest.lambda_handler(
            event(("AIDASTRANGER000000001", message(mine, "x-1"))), FakeLambdaContext()
        )
    # Refused from the message and the configuration alone: one SendMessage to the DLQ.
    assert trace.requests("dynamodb") == 0
    assert [c.operation for c in trace.of("sqs")] == ["SendMessage"]

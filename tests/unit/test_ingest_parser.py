"""The producer-contract parser and the ingest admission: one reason code per kind of poison."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stratus.config import Settings
from stratus.jobs import JobService, Notifier, PoisonMessage, parse_producer_message
from stratus.jobs.ingest import Ingest
from stratus.jobs.memory import MemoryJobStore, MemoryQueue
from stratus.tenants import MemoryTenants

DLQ = "https://sqs.test/ingest-dlq"
VALID = {"version": "1", "tenant_id": "TENANT", "agent": "triage", "input": "where is A-1001?"}


@pytest.fixture
def ingest() -> tuple[Ingest, MemoryQueue, str]:
    tenants = MemoryTenants()
    tenant, _ = tenants.create("acme")
    queue = MemoryQueue()
    jobs = JobService(
        MemoryJobStore(),
        queue,
        Notifier(publisher=None),
        settings=Settings(job_queues={"triage": "https://sqs.test/triage"}),
    )
    return Ingest(jobs, tenants, queue, DLQ), queue, tenant.tenant_id


def body(**fields: Any) -> str:
    return json.dumps({**VALID, **fields})


def reason(ingest: Ingest, raw: str) -> str:
    with pytest.raises(PoisonMessage) as poison:
        ingest.admit(raw)
    return poison.value.reason


def test_a_valid_v1_message_parses() -> None:
    message = parse_producer_message(body(metadata={"ticket": "T-1"}, idempotency_key="k"))
    assert (message.version, message.agent, message.idempotency_key) == ("1", "triage", "k")
    assert message.request().metadata == {"ticket": "T-1"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("this is not json {", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        (json.dumps({"version": "1", "agent": "triage"}), "invalid_message"),
        (body(agent="Not An Agent"), "invalid_message"),
        (body(version="2"), "unsupported_version"),
        (json.dumps({"agent": "triage", "input": "x"}), "unsupported_version"),
        (body(colour="blue"), "invalid_message"),
    ],
)
def test_the_parser_names_the_reason(raw: str, code: str) -> None:
    with pytest.raises(PoisonMessage) as poison:
        parse_producer_message(raw)
    assert poison.value.reason == code and poison.value.detail


def test_unknown_fields_name_the_field() -> None:
    with pytest.raises(PoisonMessage) as poison:
        parse_producer_message(body(colour="blue"))
    assert "colour" in poison.value.detail


def test_admission_checks_agent_then_tenant(ingest: tuple[Ingest, MemoryQueue, str]) -> None:
    admit, _, tenant = ingest
    assert admit.admit(body(tenant_id=tenant)).tenant_id == tenant
    assert reason(admit, body(tenant_id=tenant, agent="no_such_agent")) == "unknown_agent"
    assert reason(admit, body(tenant_id="nobody")) == "unknown_tenant"
    assert reason(admit, "{") == "invalid_json"


def test_accept_submits_once_and_dead_letters_poison(
    ingest: tuple[Ingest, MemoryQueue, str],
) -> None:
    admit, queue, tenant = ingest
    assert admit.accept(body(tenant_id=tenant), message_id="m-1") is True
    assert admit.accept(body(tenant_id=tenant), message_id="m-1") is False  # redelivery
    assert admit.accept(body(tenant_id="nobody"), message_id="m-2", receive_count="2") is None
    dead = [(b, a) for url, b, a in queue.sent if url == DLQ]
    assert len(dead) == 1
    assert dead[0][1]["stratus_reason"] == "unknown_tenant"
    assert dead[0][1]["stratus_source_message_id"] == "m-2"
    assert dead[0][1]["stratus_receive_count"] == "2"
    # Same idempotency key, other request: poison too (it can never succeed).
    admit.accept(body(tenant_id=tenant, idempotency_key="k"), message_id="m-3")
    assert (
        admit.accept(body(tenant_id=tenant, idempotency_key="k", input="y"), message_id="m-4")
        is None
    )
    assert [a["stratus_reason"] for url, _, a in queue.sent if url == DLQ][-1] == (
        "idempotency_key_reused"
    )


def test_json_nested_too_deeply_is_invalid_json_not_a_recursion_error() -> None:
    deep = '{"version": "1", "tenant_id": "t", "agent": "triage", "input": ' + "[" * 100_000
    deep += "]" * 100_000 + "}"
    with pytest.raises(PoisonMessage) as poison:
        parse_producer_message(deep)
    assert poison.value.reason == "invalid_json"


@pytest.mark.parametrize(
    ("fields", "limit"),
    [({"input": "x" * 9000}, 8000), ({"input": "漢" * (225 * 1024 // 3)}, None)],
)
def test_an_input_over_the_limits_is_dead_lettered_at_once(
    ingest: tuple[Ingest, MemoryQueue, str], fields: dict[str, Any], limit: int | None
) -> None:
    admission, queue, tenant = ingest
    raw = body(tenant_id=tenant, **fields)
    created = admission.accept(raw, message_id="m-1", input_limit=lambda agent: limit)
    assert created is None
    ((url, sent, attributes),) = queue.sent  # the DLQ copy only: no job queued
    assert url == DLQ and sent == raw
    assert attributes["stratus_reason"] == "input_too_large"
    assert admission.jobs.store.get("job_x") is None

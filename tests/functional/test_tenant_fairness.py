"""Fairness through the real handlers on moto: one tenant over its request rate gets
``429 throttled`` while another's requests all succeed; the take costs no round trip on
a model call; the queued-jobs cap answers ``429 too_many_jobs``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bench.roundtrips import Trace, recording
from functions.agents import load_all
from infra.local.fake_model import FakeModelServer
from stratus import composition
from stratus.breaker import wait_for_refreshes
from stratus.tenant_limits import TooManyJobs
from tests.support import api_event, call

LATENCY_S = 0.05
#: A whole second, so a window of the tests' rates starts here (the clock stands still).
NOW = 1_800_000_000.0


def _why(trace: Trace) -> str:
    return "DynamoDB waves:\n" + "\n".join(trace.describe("dynamodb"))


def _freeze_limiter() -> None:
    composition.current().tenant_limits.clock = lambda: NOW


@pytest.fixture
def limited(
    serve_agent: Any, monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("STRATUS_TENANT_RATE_LIMIT_RPS", "1")
    monkeypatch.setenv("STRATUS_TENANT_RATE_LIMIT_BURST", "3")  # 3 requests per 3 s
    monkeypatch.setenv("STRATUS_GATEWAY_STATE_CACHE_S", "60")
    serve_agent("triage")
    _freeze_limiter()
    yield {}


def _invoke(tenant: str, **headers: str) -> dict[str, Any]:
    return api_event(
        "triage", body={"input": "I was billed twice"}, tenant_id=tenant, headers=headers
    )


def test_a_tenant_over_its_rate_is_throttled_while_another_tenants_requests_succeed(
    limited: dict[str, Any],
) -> None:
    from functions.handlers import api

    noisy: list[Any] = []
    quiet: list[Any] = []
    for i in range(8):  # interleaved: the quiet tenant's calls land among the noisy ones
        noisy.append(call(api.lambda_handler, _invoke("tenant-noisy")))
        if i % 3 == 0:
            quiet.append(call(api.lambda_handler, _invoke("tenant-quiet")))
    assert [r.status for r in noisy] == [200] * 3 + [429] * 5, [r.body for r in noisy]
    assert [r.status for r in quiet] == [200] * 3, [r.body for r in quiet]
    for refused in noisy[3:]:
        assert refused.body["error"]["code"] == "throttled"
        assert refused.body["error"]["details"]["scope"] == "tenant"
        assert refused.body["error"]["details"]["burst"] == 3
        assert 1 <= int(refused.headers["Retry-After"]) <= 3
        assert refused.body["error"]["request_id"]


def test_the_take_rides_in_the_pre_call_wave_and_a_known_refusal_costs_nothing(
    limited: dict[str, Any],
) -> None:
    from functions.handlers import api

    warm = call(api.lambda_handler, _invoke("tenant-a"))
    assert warm.status == 200, warm.body
    wait_for_refreshes()
    with recording(latency_s=LATENCY_S) as trace:
        reply = call(api.lambda_handler, _invoke("tenant-a"))
    assert reply.status == 200, reply.body
    assert trace.round_trips("dynamodb") <= 2, _why(trace)
    limits = trace.of("dynamodb", table="limits")
    takes = [c for c in limits if c.operation == "UpdateItem"]
    assert takes, _why(trace)
    first_wave = trace.waves("dynamodb")[0]
    assert any("budgets" in c.table for c in first_wave), _why(trace)
    assert set(takes) & set(first_wave), _why(trace)

    # An idempotent invoke stays at three (the record's put, then the same two waves).
    with recording(latency_s=LATENCY_S) as trace:
        keyed = call(api.lambda_handler, _invoke("tenant-a", **{"Idempotency-Key": "k-1"}))
    assert keyed.status == 200, keyed.body
    assert trace.round_trips("dynamodb") <= 3, _why(trace)

    # The fourth request of the window is refused in the pre-call wave; every later one
    # from memory, with no DynamoDB request at all.
    assert call(api.lambda_handler, _invoke("tenant-a")).status == 429
    with recording(latency_s=LATENCY_S) as trace:
        again = call(api.lambda_handler, _invoke("tenant-a"))
    assert again.status == 429
    assert trace.requests("dynamodb") == 0, _why(trace)


def test_a_platform_route_takes_once_before_it_runs(
    limited: dict[str, Any], serve_agent: Any
) -> None:
    from functions.handlers import api

    serve_agent("")
    _freeze_limiter()
    usage = api_event(None, path="/v1/usage", method="GET", tenant_id="tenant-p")
    # A process's first request of a tenant also reads its own limits (cached a minute).
    with recording(latency_s=LATENCY_S) as trace:
        first = call(api.lambda_handler, usage)
    assert first.status == 200, first.body
    assert [c.operation for c in trace.waves("dynamodb")[0]] == ["GetItem"], _why(trace)
    # Then one conditional write on the limits table, before the route's own reads.
    with recording(latency_s=LATENCY_S) as trace:
        second = call(api.lambda_handler, usage)
    assert second.status == 200, second.body
    assert trace.requests("dynamodb", table="limits") == 1, _why(trace)
    (take,) = trace.waves("dynamodb")[0]
    assert (take.operation, "limits" in take.table) == ("UpdateItem", True), _why(trace)
    assert call(api.lambda_handler, usage).status == 200
    refused = call(api.lambda_handler, usage)
    assert refused.status == 429 and refused.body["error"]["details"]["scope"] == "tenant"
    # Health has no tenant: never limited by a tenant's rate.
    health = api_event(None, path="/v1/health", method="GET", tenant_id=None)
    assert call(api.lambda_handler, health).status in (200, 503)


@pytest.fixture
def queued(cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    sqs = boto3.client("sqs")
    queues = {
        name: sqs.create_queue(QueueName=f"stratus-test-agent-{name}")["QueueUrl"]
        for name in load_all()
    }
    monkeypatch.setenv("STRATUS_JOB_QUEUES", json.dumps(queues))
    monkeypatch.setenv("STRATUS_MAX_QUEUED_JOBS", "2")
    monkeypatch.setenv("STRATUS_AGENT", "")
    composition.reset()
    yield {"queues": queues}
    composition.reset()


def _submit(key: str, tenant: str = "tenant-j") -> dict[str, Any]:
    return api_event(
        None,
        path="/v1/jobs",
        body={"agent": "triage", "input": {"text": "refund please"}},
        headers={"Idempotency-Key": key},
        tenant_id=tenant,
    )


def test_the_queued_jobs_cap_answers_too_many_jobs_and_frees_a_place_when_one_ends(
    queued: dict[str, Any],
) -> None:
    from functions.handlers import api

    first = call(api.lambda_handler, _submit("k1"))
    second = call(api.lambda_handler, _submit("k2"))
    assert (first.status, second.status) == (202, 202), (first.body, second.body)
    over = call(api.lambda_handler, _submit("k3"))
    assert over.status == 429, over.body
    assert over.body["error"]["code"] == "too_many_jobs"
    assert over.body["error"]["details"] == {"limit": 2, "queued": 2}
    # A repeat of a job already queued is answered (it is not new work).
    repeat = call(api.lambda_handler, _submit("k1"))
    assert repeat.status == 202 and repeat.body["job_id"] == first.body["job_id"]
    # Another tenant has its own count.
    assert call(api.lambda_handler, _submit("k1", tenant="tenant-other")).status == 202
    # Cancelling one frees its place.
    job_id = first.body["job_id"]
    cancel = api_event(None, path=f"/v1/jobs/{job_id}/cancel", method="POST", tenant_id="tenant-j")
    cancel["pathParameters"] = {"job_id": job_id}
    cancelled = call(api.lambda_handler, cancel)
    assert cancelled.status == 200, cancelled.body
    assert call(api.lambda_handler, _submit("k3")).status == 202
    assert call(api.lambda_handler, _submit("k4")).status == 429
    # The tenant's own cap wins over the stage's.
    composition.current().budgets.set_tenant_limits(
        "tenant-j", daily_usd=None, monthly_usd=None, extra={"max_queued_jobs": 3}
    )
    assert call(api.lambda_handler, _submit("k4")).status == 202


def test_an_ingest_message_over_the_cap_is_retried_later_not_dead_lettered(
    queued: dict[str, Any],
) -> None:
    from stratus.jobs import JobRequest

    runtime = composition.current()
    for key in ("a", "b"):
        runtime.jobs.submit(
            JobRequest(agent="triage", input={"text": key}),
            tenant_id="tenant-i",
            idempotency_key=key,
            source="sqs",
        )
    with pytest.raises(TooManyJobs):  # raised: the record is reported failed, SQS redelivers
        runtime.jobs.submit(
            JobRequest(agent="triage", input={"text": "c"}),
            tenant_id="tenant-i",
            idempotency_key="c",
            source="sqs",
        )

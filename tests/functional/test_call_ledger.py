"""Every step billed once: retries replay the call ledger; the opt-in response cache."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from functions.agents import load_agent
from infra.local.fake_model import FakeModelServer, Fault
from stratus.errors import ModelProviderError
from stratus.usage import Usage
from tests.functional.gateway_support import make_rig, today

TEXT = "Where is my order A-1001?"


def test_a_redelivered_job_makes_zero_extra_provider_calls(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    first = rig.run("order_status", TEXT, kind="job", scope_id="job-42")
    calls = fake_model.call_count()
    assert calls == 2  # a tool call, then the answer
    spent = rig.spent(f"TENANT#tenant-a#DAY#{today()}")

    # SQS delivers the same job again (or Lambda retries the worker): same scope, same steps.
    again = rig.run("order_status", TEXT, kind="job", scope_id="job-42")
    assert fake_model.call_count() == calls  # zero extra provider calls
    assert again.output == first.output
    assert again.usage == first.usage and again.cost_usd == first.cost_usd
    assert again.ledger_hits == 2
    # ...and the tenant is not charged twice.
    assert rig.spent(f"TENANT#tenant-a#DAY#{today()}") == spent
    rollup = rig.gateway.rollups.tenant_usage("tenant-a", "day")["agents"]["order_status"]
    assert rollup["calls"] == 2 and rollup["ledger_hits"] == 2
    assert Decimal(rollup["cost_usd"]) == first.cost_usd


def test_a_retried_workflow_step_makes_zero_extra_provider_calls(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    rig.run("triage", TEXT, kind="job", scope_id="job-7", step="classify")
    assert fake_model.call_count() == 1
    # Step Functions retries the state: the same job and step.
    rig.run("triage", TEXT, kind="job", scope_id="job-7", step="classify")
    assert fake_model.call_count() == 1
    # A different step of the same job is a different call...
    rig.run("triage", TEXT, kind="job", scope_id="job-7", step="review")
    assert fake_model.call_count() == 2
    # ...and so is a changed request in the same step (never a stale replay).
    rig.run("triage", TEXT + " Thanks!", kind="job", scope_id="job-7", step="classify")
    assert fake_model.call_count() == 3


def test_a_retry_after_a_partial_failure_pays_only_for_the_missing_step(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud, model_max_attempts=1, tier_fast_fallbacks="")
    # The tool call is answered (a 200 "fault" with no delay is a plain answer); the
    # answer after it fails: the job fails and its worker is retried.
    fake_model.inject(Fault(status=200, times=1), Fault(status=500, times=1))
    with pytest.raises(ModelProviderError):
        rig.run("order_status", TEXT, kind="job", scope_id="job-9")
    assert fake_model.call_count() == 2
    result = rig.run("order_status", TEXT, kind="job", scope_id="job-9")
    assert result.model_calls == 2 and result.ledger_hits == 1
    assert fake_model.call_count() == 3  # only the missing step was paid for


def test_sessions_turns_are_distinct_steps(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    rig.run("triage", TEXT, kind="session", scope_id="s-1", step="turn-1")
    rig.run("triage", TEXT, kind="session", scope_id="s-1", step="turn-2")
    assert fake_model.call_count() == 2
    rig.run("triage", TEXT, kind="session", scope_id="s-1", step="turn-2")  # a retried turn
    assert fake_model.call_count() == 2


def test_a_plain_request_is_not_kept_in_the_ledger(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    rig.run("triage", TEXT, scope_id="req-1", replayable=False)
    rig.run("triage", TEXT, scope_id="req-1", replayable=False)
    assert fake_model.call_count() == 2


def test_the_response_cache_is_opt_in_and_counts_what_it_saved(
    cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    rig = make_rig(cloud)
    spec = load_agent("triage").model_copy(update={"response_cache_ttl_s": 600})
    first = rig.run(spec, "hello", scope_id="r-1", replayable=False)
    second = rig.run(spec, "hello", scope_id="r-2", replayable=False)
    assert fake_model.call_count() == 1
    assert second.output == first.output
    assert second.cache_hits == 1 and second.usage == Usage() and second.cost_usd == 0
    rollup = rig.gateway.rollups.tenant_usage("tenant-a", "day")["agents"]["triage"]
    assert rollup["cache_hits"] == 1
    assert Decimal(rollup["saved_usd"]) == first.cost_usd
    # Tenant-scoped: another tenant's identical request is not served from this cache.
    rig.run(spec, "hello", tenant="tenant-b", scope_id="r-3", replayable=False)
    assert fake_model.call_count() == 2
    # An agent that did not opt in never uses it.
    rig.run("triage", "hello", scope_id="r-4", replayable=False)
    assert fake_model.call_count() == 3


def test_an_idempotent_replay_over_http_costs_nothing(
    serve_agent: Any, fake_model: FakeModelServer
) -> None:
    from functions.handlers import api
    from tests.support import api_event, call

    serve_agent("triage")
    event = api_event("triage", body={"input": "hi"}, headers={"Idempotency-Key": "k-9"})
    first = call(api.lambda_handler, event)
    assert first.status == 200
    # The idempotency record is lost (e.g. expired) but the ledger still holds the step.
    import boto3

    from stratus.config import Settings

    table = boto3.resource("dynamodb").Table(Settings().idempotency_table)
    for item in table.scan()["Items"]:
        table.delete_item(Key={"id": item["id"]})
    again = call(api.lambda_handler, event)
    assert again.status == 200
    assert again.body["output"] == first.body["output"]
    assert fake_model.call_count() == 1

"""Issue 10 on the in-memory fakes: no job stays ``running``, retries come back after a
backoff, the lease sweep, inputs refused at submission, the job's cost cap as a scope."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from stratus.errors import InputTooLarge, ModelUnavailable
from stratus.jobs import JobBusy, JobRequest
from stratus.jobs.retries import Delivery, retry_delay_s
from stratus.jobs.store import MAX_STORED_JSON_BYTES
from stratus.jobs.sweep import LeaseSweeper
from tests.unit.test_job_lifecycle import MAX_RECEIVES, QUEUES, Runner, World, run, world

__all__ = ["world"]

DELIVERY = Delivery("https://sqs.test/triage", "receipt-1", 1)


class Boom(RuntimeError):
    pass


def _break(world: World, name: str) -> None:
    """Make one collaborator of the worker path raise (what a throttled table or queue does)."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise Boom(name)

    target = world.queue if name == "send" else world.store
    setattr(target, name, fail)


# -- 1. the whole worker path is under the last-delivery branch ------------------------


@pytest.mark.parametrize("broken", ["record_step", "send"])
def test_a_failure_after_the_run_on_the_last_delivery_fails_the_job(
    world: World, broken: str
) -> None:
    job = world.claim(world.submit(route=True))
    assert job is not None
    _break(world, broken)
    world.service.run(
        job,
        Runner({"category": "order_status"}),
        routes={"order_status": "order_status"},
        request_id="r",
        receives=MAX_RECEIVES,
    )
    done = world.store.get(job["job_id"])
    assert done is not None and done["status"] == "failed"
    assert done["error"]["code"] == "internal_error"
    assert json.loads(world.events.published[-1][0])["type"] == "job.failed"


def test_the_same_failure_before_the_last_delivery_is_retried_after_a_backoff(
    world: World,
) -> None:
    job = world.claim(world.submit(), lease_s=600)
    assert job is not None
    _break(world, "record_step")
    with pytest.raises(Boom):
        world.service.run(job, Runner(), routes={}, request_id="r", receives=1, delivery=DELIVERY)
    assert world.status(job) == "running"
    # receive 1: 5-10 s (rng 0.5 -> 8 s), on the record's own message.
    assert world.queue.visibility == [("https://sqs.test/triage", "receipt-1", 8)]


def test_a_workflow_that_cannot_start_on_the_last_delivery_fails_the_job(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    world.service.settings = world.service.settings.model_copy(update={"workflows": {}})
    world.service.launch_workflow(job, receives=MAX_RECEIVES)
    assert world.status(job) == "failed"


# -- 2. retries come back after an exponential backoff ---------------------------------


@pytest.mark.parametrize(
    ("receives", "low", "high"),
    [(1, 5, 10), (2, 10, 20), (3, 20, 40), (6, 150, 300), (20, 150, 300)],
)
def test_retry_delay_is_exponential_with_jitter_and_capped(
    receives: int, low: int, high: int
) -> None:
    kwargs = {"base_s": 10.0, "cap_s": 300.0}
    assert retry_delay_s(receives, rng=lambda: 0.0, **kwargs) == low
    assert retry_delay_s(receives, rng=lambda: 0.999999, **kwargs) == high


def test_a_retryable_failure_releases_the_lease_for_the_backoff_only(world: World) -> None:
    job = world.claim(world.submit(), lease_s=600)
    assert job is not None
    with pytest.raises(ModelUnavailable):
        world.service.run(
            job,
            Runner(ModelUnavailable("down")),
            routes={},
            request_id="r",
            receives=2,
            delivery=Delivery("q", "h", 2),
        )
    assert world.queue.visibility == [("q", "h", 15)]
    held = world.store.get(job["job_id"])
    assert held is not None and held["lease_until"] == Decimal(str(world.clock.now)) + 15


def test_a_busy_job_comes_back_when_the_other_lease_ends(world: World) -> None:
    job = world.submit()
    assert world.claim(job, lease_s=120) is not None
    world.clock.now += 20
    with pytest.raises(JobBusy) as busy:
        world.claim(job)
    assert busy.value.retry_after_s == 101


# -- 3. the lease sweep -----------------------------------------------------------------


def sweeper(world: World) -> LeaseSweeper:
    return LeaseSweeper(world.service)


def test_a_dead_workers_job_is_requeued_then_run_without_paying_twice(world: World) -> None:
    job = world.submit()
    claimed = world.claim(job, lease_s=60)
    assert claimed is not None
    # The worker records the step, then is killed before it finishes.
    runner = Runner({"category": "other"})
    result = world.service.call_step(claimed, runner, "main", "x", request_id="r")
    world.service.record(claimed, "main", result)
    assert len(runner.calls) == 1

    world.clock.now += 60 + 10  # lease expired, within the grace: not yet
    assert sweeper(world).sweep().requeued == 0
    world.clock.now += 30
    report = sweeper(world).sweep()
    assert report.as_dict() == {"seen": 1, "requeued": 1, "failed": 0, "skipped": 0}
    requeued = world.store.get(job["job_id"])
    assert requeued is not None and requeued["status"] == "queued" and requeued["sweeps"] == 1
    assert [url for url, _, _ in world.queue.sent] == [QUEUES["triage"]] * 2
    assert sweeper(world).sweep().seen == 0  # held: not re-queued again at once

    again = world.claim(job)
    assert again is not None and again["attempts"] == 2
    run(world, again, runner, receives=1)
    done = world.store.get(job["job_id"])
    assert done is not None and done["status"] == "succeeded"
    assert len(runner.calls) == 1  # the recorded step was reused, not run again
    assert done["cost_usd"] == Decimal("0.01")
    assert "lease_shard" not in done  # off the index
    assert sweeper(world).sweep().seen == 0


def test_a_job_whose_workers_keep_dying_fails_with_lease_expired(world: World) -> None:
    job = world.submit()
    for attempt in range(1, MAX_RECEIVES + 1):
        assert world.claim(job, lease_s=60) is not None
        world.clock.now += 100
        report = sweeper(world).sweep()
        if attempt < MAX_RECEIVES:
            assert report.requeued == 1
    assert report.failed == 1
    done = world.store.get(job["job_id"])
    assert done is not None and done["status"] == "failed"
    assert done["error"]["code"] == "lease_expired"
    assert done["notified"] is True
    assert json.loads(world.events.published[-1][0])["type"] == "job.failed"
    assert "lease_shard" not in done


def test_a_requeued_job_nobody_claims_is_requeued_again_after_the_hold(world: World) -> None:
    job = world.submit()
    assert world.claim(job, lease_s=60) is not None
    world.clock.now += 100
    assert sweeper(world).sweep().requeued == 1
    world.clock.now += world.service.settings.job_sweep_hold_s + 31
    assert sweeper(world).sweep().requeued == 1
    stored = world.store.get(job["job_id"])
    assert stored is not None and stored["sweeps"] == 2


def test_the_sweep_loses_to_a_worker_that_took_the_job_meanwhile(world: World) -> None:
    job = world.submit()
    assert world.claim(job, lease_s=60) is not None
    world.clock.now += 100
    (expired,) = world.store.expired_leases(world.clock.now)
    assert world.claim(job, lease_s=60) is not None  # a redelivery took it over
    assert world.store.requeue_expired(job["job_id"], expired["lease_until"], 300) is None
    assert world.store.expire(job["job_id"], expired["lease_until"], {"code": "x"}) is None
    assert world.status(job) == "running"


def test_the_sweep_leaves_live_finished_and_workflow_jobs_alone(world: World) -> None:
    live = world.submit()
    assert world.claim(live, lease_s=600) is not None
    finished = world.claim(world.submit())
    assert finished is not None
    run(world, finished, Runner())
    flow = world.claim(world.submit())
    assert flow is not None
    world.store.set_execution(flow["job_id"], "arn:aws:states:x:1:execution:m:e")
    world.submit()  # queued, never claimed
    world.clock.now += 100
    assert sweeper(world).sweep().seen == 0


def test_a_job_whose_message_never_arrived_is_sent_again_and_never_failed(
    world: World,
) -> None:
    job = world.submit()  # recorded; say its sender died before the message left
    world.queue.sent.clear()
    hold = world.store.queued_hold_s
    for _ in range(MAX_RECEIVES + 2):
        world.clock.now += hold + 31
        assert sweeper(world).sweep().as_dict() == {
            "seen": 1,
            "requeued": 1,
            "failed": 0,
            "skipped": 0,
        }
    assert len(world.queue.sent) == MAX_RECEIVES + 2  # sent again each hold
    assert world.status(job) == "queued"  # no worker ever tried it: not lease_expired
    claimed = world.claim(job)
    assert claimed is not None and claimed["attempts"] == 1


# -- 4. oversized inputs are refused at submission; stored JSON is not escaped ---------


def test_an_input_over_the_agents_limit_is_input_too_large_at_submit(world: World) -> None:
    request = JobRequest(agent="triage", input="x" * 9000)
    with pytest.raises(InputTooLarge) as refused:
        world.service.submit(
            request, tenant_id="t1", idempotency_key=None, source="api", max_input_chars=8000
        )
    assert refused.value.status == 413 and refused.value.code == "input_too_large"
    assert refused.value.details == {"limit": 8000, "size": 9000, "unit": "characters"}
    assert world.queue.sent == [] and world.store.expired_leases(2e9) == []


def test_a_225_kb_cjk_input_is_refused_by_bytes_before_any_write(world: World) -> None:
    text = "漢" * (225 * 1024 // 3)
    request = JobRequest(agent="triage", input=text)
    with pytest.raises(InputTooLarge) as refused:
        world.service.submit(request, tenant_id="t1", idempotency_key="k", source="api")
    assert refused.value.details is not None and refused.value.details["unit"] == "bytes"
    assert refused.value.details["size"] > 128 * 1024


def test_non_ascii_text_is_stored_as_is(world: World) -> None:
    job = world.submit(metadata={"客户": "東京"})
    stored = world.store.get(job["job_id"])
    assert stored is not None
    text = "漢" * 30_000  # 90 KB as UTF-8; 180 KB as \\uXXXX escapes (over the cap)
    claimed = world.claim(world.submit())
    assert claimed is not None
    world.service.finish_and_notify(claimed["job_id"], "succeeded", result=text)
    done = world.store.get(claimed["job_id"])
    assert done is not None
    assert "東京" in stored["metadata"] and "\\u" not in stored["metadata"]
    assert len(done["result"].encode()) < MAX_STORED_JSON_BYTES
    assert json.loads(done["result"]) == text


def test_a_result_over_the_cap_is_stored_as_a_truncated_preview(world: World) -> None:
    claimed = world.claim(world.submit())
    assert claimed is not None
    world.service.finish_and_notify(claimed["job_id"], "succeeded", result="y" * 200_000)
    done = world.store.get(claimed["job_id"])
    assert done is not None and len(done["result"].encode()) <= MAX_STORED_JSON_BYTES
    stored = json.loads(done["result"])
    assert stored["truncated"] is True and stored["bytes"] == 200_002
    assert stored["preview"].startswith('"yyy')


# -- 5. the job's cost cap is a budget scope of every step -----------------------------


def test_the_jobs_cost_cap_is_on_its_call_scope(world: World) -> None:
    job = world.claim(world.submit(max_cost_usd=0.5))
    assert job is not None
    runner = Runner()
    run(world, job, runner)
    ((_, scope),) = runner.calls
    assert scope.max_cost_usd == Decimal("0.5")
    other = world.claim(world.submit())
    assert other is not None
    assert world.service.tool_context(other, "main", "r").scope.max_cost_usd is None

"""The job state machine and the retry decision, on the in-memory fakes (no AWS, no HTTP)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from stratus.config import Settings
from stratus.errors import (
    JobAlreadyFinished,
    JobBudgetExceeded,
    JobNotWaitingApproval,
    ModelUnavailable,
    ValidationFailed,
)
from stratus.jobs import JobBusy, JobMessage, JobRequest, JobService, Notifier, failure_action
from stratus.jobs.memory import (
    MemoryEvents,
    MemoryJobStore,
    MemoryQueue,
    MemoryWorkflows,
)
from stratus.usage import Usage

QUEUES = {"triage": "https://sqs.test/triage", "order_status": "https://sqs.test/order_status"}
ARN = "arn:aws:states:eu-west-1:123456789012:stateMachine:researcher"
MAX_RECEIVES = 3
CALLBACK_QUEUE = "https://sqs.test/callbacks"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Result:
    output: Any
    model: str = "fake-model"
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=4))
    cost_usd: Decimal = Decimal("0.01")


class Runner:
    """A step runner that answers ``outcome`` (or raises it)."""

    def __init__(self, outcome: Any = None) -> None:
        self.outcome = {"category": "other"} if outcome is None else outcome
        self.calls: list[Any] = []

    def run(self, user_input: Any, *, ctx: Any, deadline: Any = None) -> Result:
        self.calls.append((user_input, ctx.scope))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return Result(output=self.outcome)


@dataclass
class World:
    service: JobService
    store: MemoryJobStore
    queue: MemoryQueue
    events: MemoryEvents
    workflows: MemoryWorkflows
    clock: Clock

    def submit(self, agent: str = "triage", **fields: Any) -> dict[str, Any]:
        request = JobRequest(agent=agent, input="where is A-1001?", **fields)
        job, _ = self.service.submit(request, tenant_id="t1", idempotency_key=None, source="api")
        return job

    def message(self, job: dict[str, Any]) -> JobMessage:
        return JobMessage(job_id=job["job_id"], tenant_id=job["tenant_id"], agent=job["agent"])

    def claim(self, job: dict[str, Any], lease_s: float = 60) -> dict[str, Any] | None:
        return self.service.claim(self.message(job), agent=job["agent"], lease_s=lease_s)

    def status(self, job: dict[str, Any]) -> str:
        found = self.store.get(job["job_id"])
        assert found is not None
        return str(found["status"])


@pytest.fixture
def world() -> World:
    clock = Clock()
    store = MemoryJobStore(clock=clock)
    queue, events, workflows = MemoryQueue(), MemoryEvents(), MemoryWorkflows()
    settings = Settings(
        job_queues=QUEUES,
        workflows={"researcher": ARN},
        job_max_receive_count=MAX_RECEIVES,
        callback_queue_url=CALLBACK_QUEUE,
    )
    notifier = Notifier(publisher=events)
    service = JobService(
        store, queue, notifier, settings=settings, workflows=workflows, rng=lambda: 0.5
    )
    return World(service, store, queue, events, workflows, clock)


def run(world: World, job: dict[str, Any], runner: Runner, receives: int = 1) -> None:
    world.service.run(job, runner, routes={}, request_id="req-1", receives=receives)


# -- the state machine ----------------------------------------------------------------


def test_submit_records_then_enqueues_a_queued_job(world: World) -> None:
    job = world.submit()
    assert job["status"] == "queued" and job["attempts"] == 0
    ((url, body, attributes),) = world.queue.sent
    assert url == QUEUES["triage"]
    assert json.loads(body) == {
        "version": "1",
        "job_id": job["job_id"],
        "tenant_id": "t1",
        "agent": "triage",
    }
    # The job's correlation id rides along (issue 16: stratus.correlation).
    assert attributes == {
        "tenant_id": "t1",
        "job_id": job["job_id"],
        "correlation_id": job["correlation_id"],
    }


def test_a_claim_moves_queued_to_running_under_a_lease(world: World) -> None:
    job = world.submit()
    claimed = world.claim(job, lease_s=60)
    assert claimed is not None and claimed["status"] == "running"
    assert claimed["attempts"] == 1
    assert Decimal(str(claimed["lease_until"])) == Decimal(str(world.clock.now)) + 60


def test_a_live_lease_refuses_a_second_claim(world: World) -> None:
    job = world.submit()
    assert world.claim(job, lease_s=60) is not None
    world.clock.now += 59
    with pytest.raises(JobBusy):
        world.claim(job)


def test_an_expired_lease_is_taken_over(world: World) -> None:
    job = world.submit()
    assert world.claim(job, lease_s=60) is not None
    world.clock.now += 61
    taken = world.claim(job)
    assert taken is not None and taken["status"] == "running" and taken["attempts"] == 2


def test_running_to_succeeded_records_the_step_and_notifies_once(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    runner = Runner({"category": "order_status"})
    run(world, job, runner)
    done = world.store.get(job["job_id"])
    assert done is not None and done["status"] == "succeeded"
    assert json.loads(done["result"]) == {"category": "order_status"}
    assert done["cost_usd"] == Decimal("0.01") and done["input_tokens"] == 10
    assert [s["sk"] for s in world.store.steps(job["job_id"])] == ["STEP#main"]
    ((_, scope),) = runner.calls
    assert (scope.kind, scope.scope_id, scope.step) == ("job", job["job_id"], "main")
    ((event, attributes),) = world.events.published
    assert json.loads(event)["type"] == "job.succeeded"
    assert attributes == {
        "type": "job.succeeded",
        "tenant_id": "t1",
        "agent": "triage",
        "correlation_id": job["correlation_id"],  # issue 16
    }
    assert done["notified"] is True


def test_a_routed_job_submits_the_specialist_job(world: World) -> None:
    job = world.claim(world.submit(route=True))
    assert job is not None
    world.service.run(
        job,
        Runner({"category": "order_status"}),
        routes={"order_status": "order_status"},
        request_id="r",
        receives=1,
    )
    done = world.store.get(job["job_id"])
    assert done is not None and done["routed_to"]["agent"] == "order_status"
    child = world.store.get(done["routed_to"]["job_id"])
    assert child is not None and child["parent_job_id"] == job["job_id"]
    assert [url for url, _, _ in world.queue.sent] == [QUEUES["triage"], QUEUES["order_status"]]


def test_running_to_failed_on_a_request_error(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    run(world, job, Runner(ValidationFailed("bad input")))
    done = world.store.get(job["job_id"])
    assert done is not None and done["status"] == "failed"
    assert done["error"] == {"code": "validation_error", "message": "bad input"}
    assert json.loads(world.events.published[0][0])["type"] == "job.failed"


def test_a_job_over_its_cost_cap_fails_before_the_model_runs(world: World) -> None:
    job = world.claim(world.submit(max_cost_usd=0.01))
    assert job is not None
    world.store.record_step(job["job_id"], "earlier", usage=Usage(), cost_usd=Decimal("0.01"))
    runner = Runner()
    run(world, world.store.get(job["job_id"]) or {}, runner)
    assert runner.calls == []
    done = world.store.get(job["job_id"])
    assert done is not None and done["error"]["code"] == JobBudgetExceeded.code


@pytest.mark.parametrize("state", ["queued", "running", "waiting_approval"])
def test_cancel_of_an_active_job(world: World, state: str) -> None:
    job = world.submit()
    if state != "queued":
        assert world.claim(job) is not None
        world.store.set_execution(job["job_id"], ARN.replace("stateMachine", "execution") + ":x")
    if state == "waiting_approval":
        world.store.await_approval(job["job_id"], "token-1")
    cancelled = world.service.cancel(job["job_id"], "t1")
    assert cancelled.status == "cancelled"
    assert cancelled.error == {"code": "cancelled", "message": "cancelled by the client"}
    assert world.status(job) == "cancelled"
    assert len(world.workflows.stopped) == (0 if state == "queued" else 1)
    expected = [("token-1", "JobCancelled", "cancelled")] if state == "waiting_approval" else []
    assert world.workflows.failures == expected
    assert json.loads(world.events.published[-1][0])["type"] == "job.cancelled"


def test_cancel_of_a_finished_job_is_job_already_finished(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    run(world, job, Runner())
    with pytest.raises(JobAlreadyFinished) as refused:
        world.service.cancel(job["job_id"], "t1")
    assert refused.value.code == "job_already_finished"
    assert world.status(job) == "succeeded"


def test_a_job_cancelled_while_it_ran_keeps_its_cancellation(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    world.service.cancel(job["job_id"], "t1")
    run(world, job, Runner())
    assert world.status(job) == "cancelled"
    assert [json.loads(e)["type"] for e, _ in world.events.published] == ["job.cancelled"]


def test_approval_only_when_waiting_approval(world: World) -> None:
    job = world.claim(world.submit(agent="triage", require_approval=True))
    assert job is not None
    with pytest.raises(JobNotWaitingApproval):
        world.service.approve(job["job_id"], "t1", True, "")
    assert world.store.await_approval(job["job_id"], "token-1") is not None
    answered = world.service.approve(job["job_id"], "t1", True, "looks good")
    assert answered.status == "running"
    assert world.workflows.successes == [
        ("token-1", json.dumps({"approved": True, "comment": "looks good"}))
    ]
    with pytest.raises(JobNotWaitingApproval):  # one answer only
        world.service.approve(job["job_id"], "t1", False, "")
    assert world.workflows.failures == []


def test_a_rejection_fails_the_task_token(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    world.store.await_approval(job["job_id"], "token-2")
    world.service.approve(job["job_id"], "t1", False, "")
    assert world.workflows.failures == [("token-2", "ApprovalRejected", "rejected")]


def test_only_the_winner_of_the_final_transition_notifies(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    first = world.service.finish_and_notify(job["job_id"], "succeeded", result="a")
    second = world.service.finish_and_notify(job["job_id"], "failed", error={"code": "x"})
    assert first is not None and second is None
    assert [json.loads(e)["type"] for e, _ in world.events.published] == ["job.succeeded"]
    assert world.status(job) == "succeeded"


def test_ensure_notified_catches_up_a_missed_notification(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    world.events.fail = True
    world.service.finish_and_notify(job["job_id"], "succeeded", result="a")
    finished = world.store.get(job["job_id"])
    assert finished is not None and not finished.get("notified")
    world.events.fail = False
    # The redelivered message finds the job finished: nothing runs, the event goes out.
    assert world.claim(job) is None
    assert [json.loads(e)["type"] for e, _ in world.events.published] == ["job.succeeded"]
    notified = world.store.get(job["job_id"])
    assert notified is not None and notified["notified"] is True
    assert world.claim(job) is None  # and only once
    assert len(world.events.published) == 1


def test_a_workflow_job_starts_its_execution_named_after_the_job(world: World) -> None:
    job = world.claim(world.submit(agent="triage"))
    assert job is not None
    world.service.settings = world.service.settings.model_copy(
        update={"workflows": {"triage": ARN}}
    )
    world.service.start_workflow(job)
    ((arn, execution_input),) = world.workflows.started.items()
    assert arn.endswith(":" + job["job_id"])
    assert json.loads(execution_input)["job_id"] == job["job_id"]
    stored = world.store.get(job["job_id"])
    assert stored is not None and stored["execution_arn"] == arn
    assert world.claim(job) is None  # in its workflow already: acknowledged


# -- the retry decision by receive count ----------------------------------------------


def test_a_retryable_error_before_the_last_delivery_releases_and_reraises(world: World) -> None:
    job = world.claim(world.submit(), lease_s=600)
    assert job is not None
    with pytest.raises(ModelUnavailable):
        run(world, job, Runner(ModelUnavailable("down")), receives=MAX_RECEIVES - 1)
    released = world.store.get(job["job_id"])
    assert released is not None and released["status"] == "running"
    # The lease is shortened to the retry's backoff (receive 2: 10-20 s; rng 0.5 -> 15 s).
    assert released["lease_until"] == Decimal(str(world.clock.now)) + 15
    world.clock.now += 15.5
    assert world.claim(job) is not None  # the delivery after the backoff claims it
    assert world.events.published == []


def test_a_retryable_error_on_the_last_delivery_fails_the_job(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    run(world, job, Runner(ModelUnavailable("down")), receives=MAX_RECEIVES)
    done = world.store.get(job["job_id"])
    assert done is not None and done["status"] == "failed"
    assert done["error"] == {"code": "model_unavailable", "message": "down"}


def test_a_non_retryable_error_fails_at_once(world: World) -> None:
    job = world.claim(world.submit())
    assert job is not None
    run(world, job, Runner(ValidationFailed("no")), receives=1)
    assert world.status(job) == "failed"


def test_an_unexpected_error_retries_until_the_last_delivery_then_fails(world: World) -> None:
    job = world.claim(world.submit(), lease_s=600)
    assert job is not None
    with pytest.raises(KeyError):
        run(world, job, Runner(KeyError("bug")), receives=1)
    kept = world.store.get(job["job_id"])
    assert kept is not None and kept["status"] == "running" and kept["lease_until"] != 0
    run(world, job, Runner(KeyError("bug")), receives=MAX_RECEIVES)
    done = world.store.get(job["job_id"])
    assert done is not None and done["status"] == "failed"
    assert done["error"] == {"code": "internal_error", "message": "the job failed"}


@pytest.mark.parametrize(
    ("error", "receives", "action"),
    [
        (ModelUnavailable("x"), 1, "release"),
        (ModelUnavailable("x"), 3, "fail"),
        (ValidationFailed("x"), 1, "fail"),
        (RuntimeError("x"), 2, "retry"),
        (RuntimeError("x"), 3, "fail"),
        (RuntimeError("x"), 4, "fail"),
    ],
)
def test_failure_action(error: Exception, receives: int, action: str) -> None:
    assert failure_action(error, receives, MAX_RECEIVES) == action


def test_a_finished_jobs_event_callback_and_task_budget_go_out_in_one_wave(world: World) -> None:
    """Three independent requests of a finished job: each waits for the other two, which
    only works if they are in flight together (one round trip, not three)."""
    import threading

    barrier = threading.Barrier(3, timeout=10)

    class Together(MemoryEvents):
        def publish(self, message: str, attributes: Any) -> None:
            barrier.wait()
            super().publish(message, attributes)

    class TogetherQueue(MemoryQueue):
        def send(self, queue_url: str, body: str, attributes: Any) -> None:
            if queue_url == CALLBACK_QUEUE:
                barrier.wait()
            super().send(queue_url, body, attributes)

    class Budgets:
        def __init__(self) -> None:
            self.closed: list[Any] = []

        def close_task(self, scope: Any) -> None:
            barrier.wait()
            self.closed.append(scope)

    events, queue, budgets = Together(), TogetherQueue(), Budgets()
    service = JobService(
        world.store,
        queue,
        Notifier(publisher=events),
        settings=Settings(job_queues=QUEUES, callback_queue_url=CALLBACK_QUEUE),
        budgets=budgets,
        rng=lambda: 0.5,
    )
    job, _ = service.submit(
        JobRequest(agent="triage", input="x", callback_url="https://example.com/hook"),
        tenant_id="t1",
        idempotency_key=None,
        source="api",
    )
    claimed = service.claim(
        JobMessage(job_id=job["job_id"], tenant_id="t1", agent="triage"), agent="triage", lease_s=60
    )
    assert claimed is not None
    service.finish_and_notify(job["job_id"], "succeeded", result="a")
    assert len(events.published) == 1 and len(budgets.closed) == 1
    assert [url for url, _, _ in queue.sent].count(CALLBACK_QUEUE) == 1
    finished = world.store.get(job["job_id"])
    assert finished is not None and finished["notified"] is True

"""Human review sampling and grading on the in-memory store (no AWS, no HTTP)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from stratus.config import Settings
from stratus.jobs import JobRequest, JobService, Notifier
from stratus.jobs.memory import MemoryEvents, MemoryJobStore, MemoryQueue
from stratus.reviews import (
    MAX_TEXT_CHARS,
    AlreadyReviewed,
    InvalidCursor,
    MemoryReviewStore,
    ReviewNotFound,
    Reviews,
    clip,
    new_review_id,
)
from tests.unit.test_job_lifecycle import Clock, Runner


class CountingStore(MemoryReviewStore):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.puts = 0
        self.fail = fail

    def put_new(self, item: Any) -> None:
        self.puts += 1
        if self.fail:
            raise RuntimeError("DynamoDB is down")
        super().put_new(item)


def reviews(store: MemoryReviewStore | None = None, **settings: Any) -> Reviews:
    clock = Clock()
    ticks = iter(range(10_000))
    return Reviews(
        Settings(**settings),
        store if store is not None else CountingStore(),
        # Each offer a millisecond later: ids sort by creation.
        clock=lambda: clock.now + next(ticks) / 1000,
        rng=lambda: 0.5,
    )


def offer(desk: Reviews, agent: str = "triage", **extra: Any) -> str | None:
    args: dict[str, Any] = {
        "tenant_id": "t1",
        "agent": agent,
        "release": "1.0.0",
        "kind": "invoke",
        "source_id": "req-1",
        "input": "where is my order?",
        "output": {"category": "order_status"},
        "model": "gpt-5-mini",
        **extra,
    }
    return desk.offer(**args)


# -- sampling ---------------------------------------------------------------------------


def test_share_zero_never_writes_and_share_one_always_queues() -> None:
    off = CountingStore()
    assert offer(reviews(off, review_sample_rate=0.0)) is None
    assert off.puts == 0  # not sampled: no write at all
    on = CountingStore()
    desk = reviews(on, review_sample_rate=1.0)
    ids = [offer(desk) for _ in range(5)]
    assert all(ids) and on.puts == 5
    page = desk.list("t1")
    assert [r["review_id"] for r in page["reviews"]] == list(reversed(ids))


def test_the_share_is_a_probability_per_agent_and_for_a_canary() -> None:
    store = CountingStore()
    desk = reviews(
        store,
        review_sample_rate=0.4,  # rng() = 0.5: not sampled
        review_sample_rates={"returns": 0.6},  # sampled
        review_sample_rate_canary=0.9,
    )
    assert desk.rate("triage") == 0.4 and desk.rate("returns") == 0.6
    assert desk.rate("triage", canary=True) == 0.9
    assert offer(desk, "triage") is None and store.puts == 0
    assert offer(desk, "returns") is not None
    assert offer(desk, "triage", canary=True) is not None
    assert store.puts == 2
    # Without a canary share, a canary's answers use the agent's.
    assert reviews(review_sample_rate=0.3).rate("triage", canary=True) == 0.3


def test_input_and_output_are_kept_as_text_and_clipped() -> None:
    desk = reviews(review_sample_rate=1.0)
    long = "é" * (MAX_TEXT_CHARS + 10)
    rid = offer(desk, input=long, output={"summary": "ok"}, kind="session", source_id="s-1")
    assert rid is not None
    got = desk.get("t1", rid)
    assert got["input"] == "é" * MAX_TEXT_CHARS and got["input_truncated"] is True
    assert json.loads(got["output"]) == {"summary": "ok"} and got["output_truncated"] is False
    assert (got["kind"], got["source_id"], got["status"]) == ("session", "s-1", "pending")
    assert clip("short") == ("short", False)


def test_a_failing_store_is_logged_and_swallowed() -> None:
    store = CountingStore(fail=True)
    assert offer(reviews(store, review_sample_rate=1.0)) is None
    assert store.puts == 1
    # Without a table nothing is offered and nothing raises.
    assert offer(Reviews(Settings(review_sample_rate=1.0), None)) is None


def test_review_ids_sort_by_time() -> None:
    first, second = new_review_id(1_800_000_000.0), new_review_id(1_800_000_000.002)
    assert first.startswith("rv_") and first < second


# -- a job that succeeds is offered; a failing offer never fails the job ------------------


def _job_world(store: CountingStore) -> tuple[JobService, MemoryJobStore, dict[str, Any]]:
    clock = Clock()
    jobs = MemoryJobStore(clock=clock)
    settings = Settings(job_queues={"triage": "https://sqs.test/triage"}, review_sample_rate=1.0)
    service = JobService(jobs, MemoryQueue(), Notifier(publisher=MemoryEvents()), settings=settings)
    service.reviews = Reviews(settings, store, clock=clock, rng=lambda: 0.5)
    job, _ = service.submit(
        JobRequest(agent="triage", input="where is A-1001?"),
        tenant_id="t1",
        idempotency_key=None,
        source="api",
    )
    return service, jobs, job


class SpecRunner(Runner):
    class spec:  # what the sampler reads of an AgentRunner
        name = "triage"
        version = "1.2.0"

    model_name = "gpt-5-mini"


@pytest.mark.parametrize("fail", [False, True])
def test_a_succeeded_job_is_offered_and_a_failed_offer_keeps_it_succeeded(fail: bool) -> None:
    store = CountingStore(fail=fail)
    service, jobs, job = _job_world(store)
    # The worker's claim records the release that runs the job; the review carries it.
    stamp = {"release": "r-0123456789ab", "prompt_version": "v1"}
    claimed = service.store.claim(job["job_id"], lease_s=60, fields=stamp)
    assert claimed is not None
    service.run(
        claimed, SpecRunner({"category": "order_status"}), routes={}, request_id="r", receives=1
    )
    done = jobs.get(job["job_id"])
    assert done is not None and done["status"] == "succeeded"
    assert store.puts == 1
    page = service.reviews.list("t1")  # type: ignore[union-attr]
    if fail:
        assert page["reviews"] == []
        return
    (queued,) = page["reviews"]
    assert (queued["kind"], queued["source_id"], queued["agent"]) == (
        "job",
        job["job_id"],
        "triage",
    )
    assert (queued["release"], queued["model"]) == ("r-0123456789ab", "gpt-5-mini")
    assert json.loads(queued["output"]) == {"category": "order_status"}
    assert queued["input"] == "where is A-1001?"  # a string input stays plain text


def test_a_failed_job_is_not_offered() -> None:
    store = CountingStore()
    service, _, job = _job_world(store)
    claimed = service.store.claim(job["job_id"], lease_s=60)
    assert claimed is not None
    from stratus.errors import ValidationFailed

    service.run(claimed, SpecRunner(ValidationFailed("bad")), routes={}, request_id="r", receives=1)
    assert store.puts == 0


# -- grading and the human score ----------------------------------------------------------


def test_grades_roll_up_per_agent_and_release_and_count_once() -> None:
    desk = reviews(review_sample_rate=1.0)
    a, b = offer(desk), offer(desk)
    c = offer(desk, release="2.0.0")
    assert a and b and c
    first = desk.grade("t1", a, 0.8, "good")
    assert first["status"] == "reviewed" and first["score"] == 0.8 and first["comment"] == "good"
    assert first["human_score"] == {
        "agent": "triage",
        "release": "1.0.0",
        "score": 0.8,
        "reviewed": 1,
    }
    second = desk.grade("t1", b, 0.3)
    assert second["human_score"]["score"] == 0.55 and second["human_score"]["reviewed"] == 2
    with pytest.raises(AlreadyReviewed) as err:
        desk.grade("t1", a, 0.1)
    assert err.value.details == {"review_id": a, "score": 0.8}
    desk.grade("t1", c, 1)
    scores = desk.list("t1", status="all")["human_score"]
    assert scores == [
        {"agent": "triage", "release": "1.0.0", "score": 0.55, "reviewed": 2},
        {"agent": "triage", "release": "2.0.0", "score": 1.0, "reviewed": 1},
    ]
    assert desk.list("t1")["reviews"] == []  # none pending
    assert len(desk.list("t1", status="reviewed")["reviews"]) == 3


def test_another_tenants_review_is_not_found_and_its_cursor_is_refused() -> None:
    desk = reviews(review_sample_rate=1.0)
    ids = [offer(desk) for _ in range(3)]
    with pytest.raises(ReviewNotFound):
        desk.get("t2", ids[0])  # type: ignore[arg-type]
    with pytest.raises(ReviewNotFound):
        desk.grade("t2", ids[0], 1.0)  # type: ignore[arg-type]
    page = desk.list("t1", limit=2)
    assert page["next_cursor"]
    with pytest.raises(InvalidCursor):
        desk.list("t2", cursor=page["next_cursor"])
    with pytest.raises(InvalidCursor):
        desk.list("t1", cursor="not-a-cursor")
    rest = desk.list("t1", limit=2, cursor=page["next_cursor"])
    assert [r["review_id"] for r in rest["reviews"]] == [ids[0]] and rest["next_cursor"] is None
    assert desk.store.scores("t2") == []  # type: ignore[union-attr]


def test_scores_are_exact_decimals() -> None:
    store = MemoryReviewStore()
    desk = reviews(store, review_sample_rate=1.0)
    for score in (0.1, 0.2, 0.3):
        rid = offer(desk)
        assert rid is not None
        desk.grade("t1", rid, score)
    aggregate = store.score("t1", "triage", "1.0.0")
    assert aggregate is not None and aggregate["score_sum"] == Decimal("0.6")
    assert desk.list("t1")["human_score"][0]["score"] == 0.2

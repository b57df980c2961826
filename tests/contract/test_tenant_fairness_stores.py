"""Fairness on its stores: the tenant request buckets (limits table) and the queued-jobs
counter (jobs table), the in-memory fakes and the DynamoDB adapters on moto alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.roundtrips import recording
from infra.local import moto_atomic
from stratus import ddb
from stratus.config import Settings
from stratus.gateway_stores.dynamo import DynamoBucketStore
from stratus.gateway_stores.memory import MemoryBucketStore
from stratus.gateway_stores.ports import BucketStore
from stratus.jobs import DynamoJobStore, JobRequest, JobStore, MemoryJobStore
from stratus.tenant_limits import TenantLimiter, TenantRate, TenantThrottled, TooManyJobs
from tests.tables import create_tables

T0 = 1_800_000_000.0
REQUEST = JobRequest(agent="triage", input={"q": "A-1001"})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stores:
    buckets: BucketStore
    jobs: JobStore
    clock: Clock
    kind: str


@pytest.fixture(params=["memory", "dynamodb"])
def stores(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[Stores]:
    clock = Clock()
    if request.param == "memory":
        yield Stores(MemoryBucketStore(), MemoryJobStore(clock=clock), clock, "memory")
        return
    with mock_aws():
        moto_atomic.install()  # each request atomic, as on DynamoDB
        try:
            client = boto3.client("dynamodb")
            names = create_tables(client)
            yield Stores(
                DynamoBucketStore(ddb.Table(names["limits"], client)),
                DynamoJobStore(ddb.Table(names["jobs"], client), clock=clock),
                clock,
                "dynamodb",
            )
        finally:
            moto_atomic.uninstall()


def limiter(
    stores: Stores, overrides: Callable[[str], dict[str, Any]] | None = None, **settings: Any
) -> TenantLimiter:
    return TenantLimiter(
        Settings(**settings),
        stores.buckets,
        overrides=overrides or (lambda _tenant: {}),
        clock=stores.clock,
    )


def together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(0..n-1)`` on n threads released at once; each one's value or exception."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # reported, asserted by the caller
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


# -- request rates -------------------------------------------------------------------


def test_the_window_and_capacity_of_a_rate() -> None:
    assert (TenantRate(5, 10).window_s, TenantRate(5, 10).capacity) == (2.0, 10)
    assert (TenantRate(10, 5).window_s, TenantRate(10, 5).capacity) == (1.0, 10)
    assert (TenantRate(0.5, 1).window_s, TenantRate(0.5, 1).capacity) == (2.0, 1)


def test_no_default_and_no_override_is_no_limit(stores: Stores) -> None:
    limits = limiter(stores)
    assert limits.rate("t1") is None
    for _ in range(50):
        limits.take("t1")


def test_concurrent_takes_admit_exactly_the_burst_and_another_tenant_is_untouched(
    stores: Stores,
) -> None:
    limits = limiter(stores, tenant_rate_limit_rps=1, tenant_rate_limit_burst=5)
    tenants = ["noisy"] * 20 + ["quiet"] * 5
    out = together(len(tenants), lambda i: limits.take(tenants[i]))
    noisy = out[:20]
    assert sum(o is None for o in noisy) == 5
    refused = [o for o in noisy if o is not None]
    assert len(refused) == 15 and all(isinstance(o, TenantThrottled) for o in refused)
    first = refused[0]
    assert first.status == 429 and first.code == "throttled"
    assert first.details["scope"] == "tenant"
    assert 1 <= int(first.headers["Retry-After"]) <= 5
    assert out[20:] == [None] * 5  # the quiet tenant's requests all pass


def test_a_refusal_is_remembered_until_the_window_ends_then_the_bucket_refills(
    stores: Stores,
) -> None:
    limits = limiter(stores, tenant_rate_limit_rps=2, tenant_rate_limit_burst=2)
    window_start = (T0 // 1 + 1) * 1.0  # the next whole second: a window's start
    stores.clock.now = window_start
    limits.take("t1")
    limits.take("t1")
    with pytest.raises(TenantThrottled):
        limits.take("t1")
    # Remembered: refused without asking the store (another store would admit it).
    other = TenantLimiter(Settings(), MemoryBucketStore(), clock=stores.clock)
    other._refused = limits._refused  # the same process memory
    with pytest.raises(TenantThrottled):
        other.check_cached("t1")
    stores.clock.now = window_start + 1.0  # the next window
    limits.check_cached("t1")
    limits.take("t1")


def test_a_tenants_own_rate_wins_over_the_default(stores: Stores) -> None:
    own = {"big": {"rate_limit_rps": 100, "rate_limit_burst": 100}, "small": {}}
    limits = limiter(stores, lambda t: own[t], tenant_rate_limit_rps=1, tenant_rate_limit_burst=1)
    for _ in range(20):
        limits.take("big")
    limits.take("small")
    with pytest.raises(TenantThrottled) as refused:
        limits.take("small")
    assert refused.value.details == {"scope": "tenant", "limit_rps": 1.0, "burst": 1}


# -- the queued-jobs counter -------------------------------------------------------------


def test_the_cap_holds_under_concurrent_submissions(stores: Stores) -> None:
    out = together(
        10,
        lambda i: stores.jobs.create(
            job_id=f"job_{i}", tenant_id="t1", request=REQUEST, source="api", max_queued=3
        ),
    )
    created = [o for o in out if isinstance(o, tuple)]
    refused = [o for o in out if isinstance(o, TooManyJobs)]
    assert len(created) == 3 and len(refused) == 7, out
    assert refused[0].status == 429 and refused[0].code == "too_many_jobs"
    assert refused[0].details == {"limit": 3, "queued": 3}
    assert stores.jobs.queued_count("t1") == 3
    assert stores.jobs.queued_count("t2") == 0
    # Another tenant is not counted against this one.
    stores.jobs.create(job_id="job_b", tenant_id="t2", request=REQUEST, source="api", max_queued=3)


def test_a_repeat_of_an_existing_job_is_answered_at_the_cap_and_counts_once(
    stores: Stores,
) -> None:
    jobs = stores.jobs
    jobs.create(job_id="job_1", tenant_id="t1", request=REQUEST, source="api", max_queued=1)
    again, created = jobs.create(
        job_id="job_1", tenant_id="t1", request=REQUEST, source="api", max_queued=1
    )
    assert not created and again["job_id"] == "job_1"
    assert jobs.queued_count("t1") == 1


def test_a_job_racing_to_two_final_states_is_uncounted_exactly_once(stores: Stores) -> None:
    jobs = stores.jobs
    for i in range(3):
        jobs.create(job_id=f"job_{i}", tenant_id="t1", request=REQUEST, source="api")
    claimed = jobs.claim("job_0", 30)
    assert claimed is not None and jobs.queued_count("t1") == 3
    lease = claimed["lease_until"]
    # The worker finishes, a client cancels and the sweep fails it, all at once.
    finishers: list[Callable[[], Any]] = [
        lambda: jobs.finish("job_0", "succeeded", result={"ok": True}),
        lambda: jobs.finish(
            "job_0", "cancelled", from_statuses=("queued", "running", "waiting_approval")
        ),
        lambda: jobs.expire("job_0", lease, {"code": "lease_expired", "message": "x"}),
    ]
    out = together(3, lambda i: finishers[i]())
    assert sum(o is not None for o in out) == 1, out
    assert jobs.queued_count("t1") == 2
    # Finishing it again changes nothing.
    assert jobs.finish("job_0", "failed", error={"code": "x", "message": "x"}) is None
    assert jobs.queued_count("t1") == 2
    # The sweep failing a queued job gives its place back too.
    queued = jobs.get("job_1")
    assert queued is not None
    assert jobs.expire("job_1", queued["lease_until"], {"code": "x", "message": "x"})
    assert jobs.queued_count("t1") == 1
    # A place freed is a place taken again.
    jobs.create(job_id="job_9", tenant_id="t1", request=REQUEST, source="api", max_queued=2)
    with pytest.raises(TooManyJobs):
        jobs.create(job_id="job_10", tenant_id="t1", request=REQUEST, source="api", max_queued=2)


def test_a_job_made_before_the_counter_finishes_without_touching_it(stores: Stores) -> None:
    jobs = stores.jobs
    jobs.create(job_id="job_new", tenant_id="t1", request=REQUEST, source="api")
    old = dict(jobs.get("job_new") or {})
    old.update(job_id="job_old")
    old.pop("counted")
    if isinstance(jobs, DynamoJobStore):
        jobs.table.put(old)
    else:
        assert isinstance(jobs, MemoryJobStore)
        jobs._items[("job_old", "JOB")] = old
    done = jobs.finish("job_old", "cancelled", from_statuses=("queued",))
    assert done is not None and done["status"] == "cancelled"
    assert jobs.queued_count("t1") == 1  # only the counted job is in the count


def test_finishing_with_the_claimed_copy_uncounts_once_and_reads_nothing_first(
    stores: Stores,
) -> None:
    """The worker hands the job it claimed to ``finish``: the same transition and count,
    without reading the job before the write (tenant and ``counted`` never change)."""
    jobs = stores.jobs
    for i in range(2):
        jobs.create(job_id=f"job_{i}", tenant_id="t1", request=REQUEST, source="api")
    claimed = jobs.claim("job_0", 30)
    assert claimed is not None
    with recording() as trace:
        done = jobs.finish("job_0", "succeeded", result={"ok": True}, known=claimed)
    assert done is not None and done["status"] == "succeeded"
    assert jobs.queued_count("t1") == 1
    if stores.kind == "dynamodb":  # the transaction, then the new item: no read before
        assert [c.operation for c in trace.calls] == ["TransactWriteItems", "GetItem"]
    # A second finish with the same copy loses: nothing changes, nothing is uncounted.
    assert jobs.finish("job_0", "failed", error={"code": "x"}, known=claimed) is None
    assert jobs.queued_count("t1") == 1
    # Another job's copy is not taken for this one: it is read as before.
    other = jobs.claim("job_1", 30)
    assert other is not None
    assert jobs.finish("job_1", "succeeded", result={}, known=claimed) is not None
    assert jobs.queued_count("t1") == 0

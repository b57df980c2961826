"""The lease sweep: jobs whose worker died are re-queued, or failed with ``lease_expired``.

A worker claims a job under a lease as long as its invocation may live; a worker
that dies (timeout, OOM, a killed process) leaves the job ``running`` with a lease
that runs out. The sweep (a scheduled function, every minute; the local cloud runs
the same handler periodically) reads the expired leases from the jobs table's
sparse ``leases`` index (``lease_shard`` exists only while a job is leased or held
after a re-queue, so nothing scans the table) and, for each, with a write that is
conditional on the lease it saw (a worker that took the job meanwhile wins):

* **re-queues** it (``queued``, a new message on the agent's queue, ``sweeps`` + 1,
  held ``job_sweep_hold_s`` before another re-queue) while claims and sweeps are
  below the queue's ``maxReceiveCount``, and always for a job still ``queued`` (new
  jobs are in the index for ``job_sweep_hold_s`` until claimed, so one whose message
  never arrived is sent again); the next worker replays every model step
  already paid for from the call ledger and reuses recorded steps;
* **fails** it with ``{"code": "lease_expired"}`` (and notifies) once they are not.
"""

from __future__ import annotations

from dataclasses import dataclass

from stratus.jobs.service import JobService
from stratus.observability import logger, metrics

LEASE_EXPIRED = "lease_expired"


@dataclass
class SweepReport:
    """What one sweep did."""

    seen: int = 0
    requeued: int = 0
    failed: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class LeaseSweeper:
    """Re-queues or fails the jobs whose lease expired (one pass per :meth:`sweep`)."""

    def __init__(self, jobs: JobService, *, limit: int = 100) -> None:
        self.jobs = jobs
        self.limit = limit

    def sweep(self) -> SweepReport:
        store, settings = self.jobs.store, self.jobs.settings
        report = SweepReport()
        before = store.clock() - settings.job_sweep_grace_s
        for job in store.expired_leases(before, limit=self.limit):
            report.seen += 1
            job_id, seen = job["job_id"], job.get("lease_until", 0)
            if job.get("status") not in ("queued", "running") or job.get("execution_arn"):
                report.skipped += 1
                continue
            attempts, sweeps = int(job.get("attempts", 0)), int(job.get("sweeps", 0))
            budget = settings.job_max_receive_count
            # A queued job was never claimed: its message is late or was never sent. It is
            # sent again, never failed (no worker has tried it yet).
            running = job.get("status") == "running"
            if running and (attempts >= budget or sweeps >= budget):
                error = {
                    "code": LEASE_EXPIRED,
                    "message": f"the job's worker stopped {attempts} times before finishing",
                }
                done = store.expire(job_id, seen, error)
                if done is None:
                    report.skipped += 1
                    continue
                metrics.add_metric(name="JobsFailed", unit="Count", value=1)
                metrics.add_metric(name="JobLeasesExpired", unit="Count", value=1)
                self.jobs.notify(done)
                report.failed += 1
                logger.warning("job failed: lease expired", extra={"job_id": job_id})
                continue
            moved = store.requeue_expired(job_id, seen, settings.job_sweep_hold_s)
            if moved is None:
                report.skipped += 1
                continue
            self.jobs.enqueue(moved)
            metrics.add_metric(name="JobsRequeued", unit="Count", value=1)
            report.requeued += 1
            logger.info("job re-queued after its lease expired", extra={"job_id": job_id})
        return report

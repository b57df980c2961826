"""Approvals record who approved and why, on the job and in the audit trail; a job runs
its tools as the key that submitted it (in-memory fakes: no AWS, no HTTP)."""

from __future__ import annotations

from typing import Any

from stratus.agents import Principal
from stratus.audit import AuditTrail, MemoryAuditStore
from stratus.config import Settings
from stratus.jobs import JobRequest, JobService, Notifier
from stratus.jobs.contracts import view
from stratus.jobs.memory import MemoryEvents, MemoryJobStore, MemoryQueue, MemoryWorkflows

QUEUES = {"triage": "https://sqs.test/triage"}


def service() -> tuple[JobService, MemoryJobStore, MemoryAuditStore]:
    store = MemoryJobStore(clock=lambda: 1_800_000_000.0)
    jobs = JobService(
        store,
        MemoryQueue(),
        Notifier(publisher=MemoryEvents()),
        settings=Settings(job_queues=QUEUES, callback_queue_url="https://sqs.test/cb"),
        workflows=MemoryWorkflows(),
    )
    audit = MemoryAuditStore()
    jobs.audit = AuditTrail(audit, clock=lambda: 1_800_000_000.0)
    return jobs, store, audit


def waiting(jobs: JobService, store: MemoryJobStore, **submit: Any) -> str:
    request = JobRequest(agent="triage", input="refund?", require_approval=True)
    job, _ = jobs.submit(request, tenant_id="t1", idempotency_key=None, source="api", **submit)
    assert store.claim(job["job_id"], lease_s=60) is not None
    assert store.await_approval(job["job_id"], "token-1") is not None
    return str(job["job_id"])


def test_an_approval_records_the_approving_key_and_comment_and_is_audited() -> None:
    jobs, store, audit = service()
    job_id = waiting(jobs, store)
    answered = jobs.approve(job_id, "t1", True, "checked the invoice", by="key_boss")
    assert jobs.audit is not None and jobs.audit.flush() == 1
    approval = answered.model_dump(mode="json")["approval"]
    assert approval["approved"] is True and approval["by"] == "key_boss"
    assert approval["comment"] == "checked the invoice" and approval["at"]
    assert view(store.get(job_id) or {}).approval == answered.approval  # GET /v1/jobs/{id}
    (event,) = audit.events("t1")[0]
    assert (event.type, event.actor) == ("job.approved", "key_boss")
    assert event.details == {"job_id": job_id, "agent": "triage", "comment": "checked the invoice"}


def test_a_rejection_is_audited_as_such() -> None:
    jobs, store, audit = service()
    job_id = waiting(jobs, store)
    jobs.approve(job_id, "t1", False, "no", by="key_boss")
    assert jobs.audit is not None and jobs.audit.flush() == 1
    assert [e.type for e in audit.events("t1")[0]] == ["job.rejected"]
    assert view(store.get(job_id) or {}).model_dump()["approval"]["approved"] is False


def test_a_job_runs_its_tools_as_the_submitting_key() -> None:
    jobs, store, _ = service()
    who = Principal(key_id="key_1", role="viewer", customer_id="cust-1")
    job_id = waiting(jobs, store, principal=who)
    ctx = jobs.tool_context(store.get(job_id) or {}, "main", "req-1")
    assert (ctx.key_id, ctx.role, ctx.customer_id) == ("key_1", "viewer", "cust-1")
    job, _ = jobs.submit(
        JobRequest(agent="triage", input="x"), tenant_id="t1", idempotency_key="k", source="sqs"
    )
    assert "caller" not in job  # ingest: nobody in particular, every tool
    ctx = jobs.tool_context(job, "main", "req-2")
    assert (ctx.key_id, ctx.role, ctx.customer_id) == (None, None, None)

"""JobService: the job lifecycle, from submission to the notification of its end.

* **submit** (HTTP, ingest, routing): record first, then enqueue on the agent's
  queue. A crash in between leaves a queued job whose retry sends it again; a
  repeat while queued sends it again too, which the conditional claim makes
  harmless.
* **claim** under a lease as long as the invocation may live: a redelivered
  message finds the job finished (acknowledged; its notification caught up if it
  was missed), running under a live lease (:class:`JobBusy`: retried later), or
  running under an expired lease (the previous worker died: this one takes over).
* **run** a step: budget check, the model call under
  ``CallScope(kind="job", scope_id=job_id, step=...)`` (a takeover replays what
  the dead worker paid for from the call ledger), record the step once.
* the **retry decision** by receive count (:func:`failure_action`).
* **finish and notify**: only the writer that wins the final transition
  publishes; ``notified`` marks that it did, :meth:`JobService.ensure_notified`
  catches up when it did not.
* **cancel** and **approve**, each one conditional transition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from stratus.agents import CallScope, ToolContext
from stratus.aws import AwsClients
from stratus.config import Settings
from stratus.contracts import MAX_IDEMPOTENCY_KEY_LEN
from stratus.deadline import Deadline
from stratus.errors import (
    AgentNotFound,
    ConfigurationError,
    DeadlineExceeded,
    JobAlreadyFinished,
    JobNotFound,
    JobNotWaitingApproval,
    ModelProviderError,
    ModelRateLimited,
    ModelUnavailable,
    StratusError,
    ValidationFailed,
)
from stratus.jobs.contracts import (
    TERMINAL,
    FinalStatus,
    JobMessage,
    JobRequest,
    JobView,
    check_budget,
    job_id_for,
    job_input,
    job_metadata,
    view,
)
from stratus.jobs.notifications import Notifier
from stratus.jobs.ports import MessageQueue, StepResult, StepRunner, WorkflowEngine
from stratus.jobs.store import Item, JobStore
from stratus.observability import logger, metrics

#: Failures worth another delivery: the provider or the clock, not the request.
RETRYABLE: tuple[type[StratusError], ...] = (
    ModelUnavailable,
    ModelRateLimited,
    ModelProviderError,
    DeadlineExceeded,
)
CANCELLED = {"code": "cancelled", "message": "cancelled by the client"}


class JobBusy(Exception):
    """Another worker holds the job's lease; the message comes back after its visibility timeout."""


class BadJobMessage(Exception):
    """The message is not a job of this agent; after maxReceiveCount it lands in the DLQ."""


FailureAction = Literal["release", "retry", "fail"]


def failure_action(exc: BaseException, receives: int, max_receives: int) -> FailureAction:
    """What a failed run does on delivery ``receives`` of ``max_receives``.

    ``release``: drop the lease and raise (a retryable error before the last
    delivery); ``retry``: raise, keeping the lease (an unexpected error before the
    last delivery); ``fail``: fail the job (a non-retryable :class:`StratusError`,
    or any error on the last delivery, rather than leave it running while its
    message goes to the DLQ).
    """
    last = receives >= max_receives
    if isinstance(exc, RETRYABLE):
        return "fail" if last else "release"
    if isinstance(exc, StratusError):
        return "fail"
    return "fail" if last else "retry"


def job_error(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, StratusError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "internal_error", "message": "the job failed"}


class JobService:
    """The job lifecycle over a :class:`JobStore`, a queue, a workflow engine and a notifier."""

    def __init__(
        self,
        store: JobStore,
        queue: MessageQueue,
        notifier: Notifier,
        *,
        settings: Settings,
        workflows: WorkflowEngine | None = None,
        clients: AwsClients | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.notifier = notifier
        self.settings = settings
        self.workflows = workflows
        self.clients = clients

    # -- submission

    def knows(self, agent: str) -> bool:
        return agent in self.settings.job_queues

    def submit(
        self,
        request: JobRequest,
        *,
        tenant_id: str,
        idempotency_key: str | None,
        source: str,
        parent_job_id: str | None = None,
    ) -> tuple[Item, bool]:
        """Create (or find) the job and make sure its message is on the agent's queue."""
        if idempotency_key is not None and (
            not idempotency_key.strip() or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LEN
        ):
            raise ValidationFailed(
                f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters",
                details={"field": "Idempotency-Key"},
            )
        if not self.knows(request.agent):
            raise AgentNotFound(
                f"no agent named {request.agent!r}", details={"agent": request.agent}
            )
        job, created = self.store.create(
            job_id=job_id_for(tenant_id, idempotency_key),
            tenant_id=tenant_id,
            request=request,
            source=source,
            idempotency_key=idempotency_key,
            parent_job_id=parent_job_id,
        )
        if job["status"] == "queued":
            self._enqueue(job)
        logger.info(
            "job submitted",
            extra={
                "job_id": job["job_id"],
                "tenant_id": tenant_id,
                "agent": request.agent,
                "new_job": created,
                "source": source,
            },
        )
        return job, created

    def _enqueue(self, job: Mapping[str, Any]) -> None:
        agent = job["agent"]
        url = self.settings.job_queues.get(agent)
        if not url:
            raise ConfigurationError(f"no job queue for agent {agent!r}")
        message = JobMessage(job_id=job["job_id"], tenant_id=job["tenant_id"], agent=agent)
        self.queue.send(
            url,
            message.model_dump_json(),
            {"tenant_id": job["tenant_id"], "job_id": job["job_id"]},
        )

    # -- reads, cancel, approve (the jobs API)

    def get_for_tenant(self, job_id: str, tenant_id: str) -> Item:
        """The job if it belongs to ``tenant_id``; another tenant's job is missing (404)."""
        job = self.store.get(job_id) if job_id.startswith("job_") and len(job_id) <= 64 else None
        if job is None or job["tenant_id"] != tenant_id:
            raise JobNotFound(f"no job {job_id!r}", details={"job_id": job_id})
        return job

    def view_for_tenant(self, job_id: str, tenant_id: str) -> JobView:
        job = self.get_for_tenant(job_id, tenant_id)
        return view(job, self.store.steps(job_id))

    def cancel(self, job_id: str, tenant_id: str) -> JobView:
        """Cancel an active job: stop its workflow, release its task token, notify."""
        job = self.get_for_tenant(job_id, tenant_id)
        if job["status"] in TERMINAL:
            raise JobAlreadyFinished(f"job {job_id} is already {job['status']}")
        done = self.store.finish(
            job_id,
            "cancelled",
            error=CANCELLED,
            from_statuses=("queued", "running", "waiting_approval"),
        )
        if done is None:
            latest = self.get_for_tenant(job_id, tenant_id)
            raise JobAlreadyFinished(f"job {job_id} is already {latest['status']}")
        if done.get("execution_arn") and self.workflows is not None:
            self._stop_workflow(done, job.get("task_token"))
        self._notify(done)
        logger.info("job cancelled", extra={"job_id": job_id})
        return view(done)

    def _stop_workflow(self, job: Mapping[str, Any], task_token: str | None) -> None:
        assert self.workflows is not None
        try:
            self.workflows.stop(job["execution_arn"], error="JobCancelled", cause="cancelled")
        except Exception:  # the record says cancelled: every later step stops by itself
            logger.exception("stopping the workflow failed", extra={"job_id": job["job_id"]})
        if task_token:
            # After StopExecution AWS refuses the token (ignored); an emulator that keeps
            # waiting on it (moto) is released by the failure instead of hanging on.
            try:
                self.workflows.send_task_failure(
                    task_token, error="JobCancelled", cause="cancelled"
                )
            except Exception:
                logger.debug("task token already closed", extra={"job_id": job["job_id"]})

    def approve(self, job_id: str, tenant_id: str, approved: bool, comment: str) -> JobView:
        """Answer a job waiting for approval; the conditional transition admits one answer."""
        job = self.get_for_tenant(job_id, tenant_id)
        token = job.get("task_token")
        if job["status"] != "waiting_approval" or not token:
            raise JobNotWaitingApproval(f"job {job_id} is {job['status']}, not waiting_approval")
        answered = self.store.answer_approval(job_id, approved, comment)
        if answered is None:
            raise JobNotWaitingApproval(f"job {job_id} is no longer waiting for approval")
        if self.workflows is None:
            raise ConfigurationError("no workflow engine configured")
        if approved:
            self.workflows.send_task_success(
                token, json.dumps({"approved": True, "comment": comment})
            )
        else:
            self.workflows.send_task_failure(
                token, error="ApprovalRejected", cause=comment or "rejected"
            )
        logger.info("approval answered", extra={"job_id": job_id, "approved": approved})
        return view(answered)

    # -- completion

    def finish_and_notify(self, job_id: str, status: FinalStatus, **kwargs: Any) -> Item | None:
        """Finish the job; only the writer that wins the transition notifies."""
        done = self.store.finish(job_id, status, **kwargs)
        if done is not None:
            metrics.add_metric(name=f"Jobs{status.capitalize()}", unit="Count", value=1)
            self._notify(done)
        return done

    def ensure_notified(self, job: Mapping[str, Any]) -> None:
        """A finished job whose event was never sent (the worker died right after finishing)."""
        if job["status"] in TERMINAL and not job.get("notified"):
            self._notify(job)

    def _notify(self, job: Mapping[str, Any]) -> None:
        if self.notifier.job_finished(job):
            self.store.mark_notified(job["job_id"])

    # -- the worker

    def claim(self, message: JobMessage, *, agent: str, lease_s: float) -> Item | None:
        """The job, claimed under a lease; None if there is nothing to run.

        Raises :class:`BadJobMessage` (not this agent's job) or :class:`JobBusy`.
        """
        if message.agent != agent:
            raise BadJobMessage(f"job {message.job_id} is for {message.agent}, this is {agent}")
        job = self.store.get(message.job_id)
        if job is None or job["tenant_id"] != message.tenant_id:
            raise BadJobMessage(f"no job {message.job_id} for tenant {message.tenant_id}")
        logger.append_keys(job_id=message.job_id, tenant_id=message.tenant_id)
        if job["status"] in TERMINAL:
            logger.info(
                "job already finished; message acknowledged", extra={"status": job["status"]}
            )
            self.ensure_notified(job)
            return None
        if job.get("execution_arn") or job["status"] == "waiting_approval":
            logger.info("job is in its workflow already; message acknowledged")
            return None
        claimed = self.store.claim(message.job_id, lease_s=lease_s)
        if claimed is None:
            raise JobBusy(f"job {message.job_id} is running under another worker's lease")
        return claimed

    def start_workflow(self, job: Mapping[str, Any]) -> None:
        """Start the job's execution, named after the job: a second start cannot run it twice."""
        arn = self.settings.workflows.get(job["agent"])
        if not arn or self.workflows is None:
            raise RuntimeError(f"no state machine configured for agent {job['agent']}")
        execution_input = {
            "job_id": job["job_id"],
            "tenant_id": job["tenant_id"],
            "require_approval": bool(job.get("require_approval")),
            "approval_timeout_s": self.settings.approval_timeout_s,
        }
        execution_arn = self.workflows.start(arn, job["job_id"], json.dumps(execution_input))
        self.store.set_execution(job["job_id"], execution_arn)
        logger.info("workflow started", extra={"execution_arn": execution_arn})

    def tool_context(self, job: Mapping[str, Any], step: str, request_id: str) -> ToolContext:
        """The context of one model step: scoped to the job's tenant, billed to job + step."""
        return ToolContext(
            tenant_id=job["tenant_id"],
            agent=job["agent"],
            request_id=request_id,
            settings=self.settings,
            scope=CallScope(
                tenant_id=job["tenant_id"],
                agent=job["agent"],
                kind="job",
                scope_id=job["job_id"],
                step=step,
            ),
            clients=self.clients,
        )

    def call_step(
        self,
        job: Mapping[str, Any],
        runner: StepRunner,
        step: str,
        payload: Any,
        *,
        request_id: str,
        deadline: Deadline | None = None,
    ) -> StepResult:
        """Check the job's budget, then run one model step (not yet recorded)."""
        ctx = self.tool_context(job, step, request_id)
        check_budget(job, ctx.scope)
        return runner.run(payload, ctx=ctx, deadline=deadline)

    def record(self, job: Mapping[str, Any], step: str, result: StepResult) -> Any:
        """Record a step once (usage and cost added to the job); its output."""
        self.store.record_step(
            job["job_id"],
            step,
            usage=result.usage,
            cost_usd=result.cost_usd,
            model=result.model,
            output=result.output,
        )
        return result.output

    def run(
        self,
        job: Mapping[str, Any],
        runner: StepRunner,
        *,
        routes: Mapping[str, str],
        request_id: str,
        receives: int,
        deadline: Deadline | None = None,
    ) -> None:
        """Run a claimed single-step job to its end, or raise for another delivery."""
        job_id = job["job_id"]
        try:
            result = self.call_step(
                job, runner, "main", job_input(job), request_id=request_id, deadline=deadline
            )
        except Exception as exc:
            action = failure_action(exc, receives, self.settings.job_max_receive_count)
            if action == "release":
                logger.warning(
                    "job failed; it will be retried", extra={"code": job_error(exc)["code"]}
                )
                self.store.release(job_id)
                raise
            if action == "retry":
                raise
            if isinstance(exc, StratusError) and not isinstance(exc, RETRYABLE):
                logger.info("job failed", extra={"code": exc.code, "error": exc.message})
            elif not isinstance(exc, StratusError):
                logger.exception("job failed on its last delivery")
            self.finish_and_notify(job_id, "failed", error=job_error(exc))
            return
        output = self.record(job, "main", result)
        extra: dict[str, Any] = {}
        routed = self.route(job, output, routes)
        if routed is not None:
            extra["routed_to"] = routed
        if self.finish_and_notify(job_id, "succeeded", result=output, extra=extra) is None:
            logger.info("job was cancelled while it ran; its result is discarded")

    def route(
        self, job: Mapping[str, Any], output: Any, routes: Mapping[str, str]
    ) -> dict[str, str] | None:
        """Hand the job to the specialized agent the decision names (through that agent's queue)."""
        if not job.get("route") or not isinstance(output, dict):
            return None
        target = routes.get(str(output.get("category", "")))
        if target is None:
            return None
        request = JobRequest(
            agent=target,
            input=job_input(job),
            metadata={**job_metadata(job), "routed_from": job["agent"]},
        )
        child, _ = self.submit(
            request,
            tenant_id=job["tenant_id"],
            # Deterministic: a retried routing step finds the same child job.
            idempotency_key=f"route:{job['job_id']}:{target}",
            source="route",
            parent_job_id=job["job_id"],
        )
        logger.info("job routed", extra={"to_agent": target, "child_job_id": child["job_id"]})
        return {"agent": target, "job_id": child["job_id"]}

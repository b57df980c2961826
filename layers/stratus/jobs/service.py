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
* the **retry decision** by receive count (:mod:`stratus.jobs.retries`), over the
  whole worker path; a retry comes back after an exponential backoff
  (``ChangeMessageVisibility`` on the record's message).
* **finish and notify**: only the writer that wins the final transition
  publishes and queues the callback (:mod:`stratus.jobs.callbacks`); ``notified``
  marks that it did, :meth:`JobService.ensure_notified` catches up when it did not.
* **cancel** and **approve**, each one conditional transition.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from stratus import correlation
from stratus.agents import CallScope, Principal, ToolContext
from stratus.aws import AwsClients
from stratus.config import Settings
from stratus.contracts import MAX_IDEMPOTENCY_KEY_LEN
from stratus.deadline import Deadline
from stratus.errors import (
    AgentNotFound,
    ConfigurationError,
    InputRejected,
    JobAlreadyFinished,
    JobNotFound,
    JobNotWaitingApproval,
    StratusError,
    ValidationFailed,
)
from stratus.fanout import run_all, values
from stratus.gateway_bookkeeping import deferred, drain
from stratus.jobs.callbacks import queue_callback
from stratus.jobs.contracts import (
    TERMINAL,
    FinalStatus,
    JobMessage,
    JobRequest,
    JobView,
    check_budget,
    check_input,
    job_id_for,
    job_input,
    job_metadata,
    view,
)
from stratus.jobs.notifications import Notifier
from stratus.jobs.ports import (
    MessageQueue,
    StepResult,
    StepRunner,
    TaskBudgets,
    WorkflowEngine,
)
from stratus.jobs.retries import (
    RETRYABLE,
    Delivery,
    FailureAction,
    failure_action,
    retry_delay_s,
)
from stratus.jobs.store import Item, JobStore
from stratus.observability import logger, metrics
from stratus.release_tags import emit_task, is_task_error
from stratus.task_metrics import job_ended

if TYPE_CHECKING:
    from stratus.audit import AuditTrail
    from stratus.reviews import Reviews

CANCELLED = {"code": "cancelled", "message": "cancelled by the client"}


class JobBusy(Exception):
    """Another worker holds the job's lease; the message comes back when the lease ends."""

    def __init__(self, message: str, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadJobMessage(Exception):
    """The message is not a job of this agent; after maxReceiveCount it lands in the DLQ."""


def job_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, InputRejected):  # which guardrail category refused it
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    if isinstance(exc, StratusError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "internal_error", "message": "the job failed"}


def job_scope(job: Mapping[str, Any], step: str) -> CallScope:
    """``CallScope(kind="job", scope_id=job_id, step=step, max_cost_usd=<the job's cap>)``."""
    cap = job.get("max_cost_usd")
    return CallScope(
        tenant_id=job["tenant_id"],
        agent=job["agent"],
        kind="job",
        scope_id=job["job_id"],
        step=step,
        max_cost_usd=Decimal(str(cap)) if cap is not None else None,
    )


class JobService:
    """The job lifecycle over a :class:`JobStore`, a queue, a workflow engine and a notifier."""

    #: Human review sampling of succeeded jobs' answers (the composition root sets it).
    reviews: Reviews | None = None
    #: Approvals and rejections are audited (the composition root sets it).
    audit: AuditTrail | None = None
    #: tenant -> its cap on jobs queued or running (:mod:`stratus.tenant_limits`); None:
    #: no cap. Applies to new jobs from the API and the ingest queue, not routed steps.
    queued_cap: Callable[[str], int | None] | None = None

    def __init__(
        self,
        store: JobStore,
        queue: MessageQueue,
        notifier: Notifier,
        *,
        settings: Settings,
        workflows: WorkflowEngine | None = None,
        clients: AwsClients | None = None,
        budgets: TaskBudgets | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.budgets = budgets
        self.queue = queue
        self.notifier = notifier
        self.settings = settings
        self.workflows = workflows
        self.clients = clients
        self.rng = rng

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
        max_input_chars: int | None = None,
        principal: Principal | None = None,
        correlation_id: str | None = None,
    ) -> tuple[Item, bool]:
        """Create (or find) the job and make sure its message is on the agent's queue.

        ``correlation_id`` (default: the bound one, else a new one) is stored on the job.

        Raises :class:`InputTooLarge` (413 ``input_too_large``) over the agent's
        ``max_input_chars`` or the ``job_max_input_bytes`` cap.
        """
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
        check_input(
            request, max_input_chars=max_input_chars, max_bytes=self.settings.job_max_input_bytes
        )
        job, created = self.store.create(
            job_id=job_id_for(tenant_id, idempotency_key),
            tenant_id=tenant_id,
            request=request,
            source=source,
            idempotency_key=idempotency_key,
            parent_job_id=parent_job_id,
            caller=principal.encode() if principal and principal != Principal() else None,
            max_queued=self.queued_cap(tenant_id)
            if self.queued_cap is not None and source in ("api", "sqs")
            else None,
            correlation_id=correlation_id or correlation.current() or correlation.new_id(),
        )
        if job["status"] == "queued":
            self.enqueue(job)
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

    def enqueue(self, job: Mapping[str, Any]) -> None:
        agent = job["agent"]
        url = self.settings.job_queues.get(agent)
        if not url:
            raise ConfigurationError(f"no job queue for agent {agent!r}")
        message = JobMessage(job_id=job["job_id"], tenant_id=job["tenant_id"], agent=agent)
        ids = {"tenant_id": job["tenant_id"], "job_id": job["job_id"]}
        cid = correlation.attributes(job.get("correlation_id"))
        self.queue.send(url, message.model_dump_json(), {**ids, **cid})

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
        self.notify(done)
        logger.info("job cancelled", extra={"job_id": job_id})
        return view(self.store.get(job_id) or done)  # with its callback's status

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

    def approve(
        self, job_id: str, tenant_id: str, approved: bool, comment: str, by: str | None = None
    ) -> JobView:
        """Answer a job waiting for approval; the conditional transition admits one answer
        (``by``: the approving key id, kept on the job and in the audit trail)."""
        job = self.get_for_tenant(job_id, tenant_id)
        token = job.get("task_token")
        if job["status"] != "waiting_approval" or not token:
            raise JobNotWaitingApproval(f"job {job_id} is {job['status']}, not waiting_approval")
        answered = self.store.answer_approval(job_id, approved, comment, by=by)
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
        if self.audit is not None:
            kind = "job.approved" if approved else "job.rejected"
            details = {"job_id": job_id, "agent": job["agent"], "comment": comment[:500]}
            self.audit.record(tenant_id, kind, actor=by or "system", details=details)
        return view(answered)

    # -- completion

    def finish_and_notify(
        self, job_id: str, status: FinalStatus, *, task_error: bool = True, **kwargs: Any
    ) -> Item | None:
        """Finish the job; only the writer that wins the transition notifies, and emits the
        task metrics of the release that ran it (``task_error``: a failure of the agent)."""
        done = self.store.finish(job_id, status, **kwargs)
        if done is not None:
            metrics.add_metric(name=f"Jobs{status.capitalize()}", unit="Count", value=1)
            job_ended(done, status, task_error=task_error)  # stratus.task_metrics
            failed = status == "failed"
            if done.get("release") and (status == "succeeded" or (failed and task_error)):
                cost = None if failed else Decimal(str(done.get("cost_usd", 0)))
                emit_task(done["agent"], str(done["release"]), cost_usd=cost, failed=failed)
            self.notify(done)
        return done

    def ensure_notified(self, job: Mapping[str, Any]) -> None:
        """A finished job whose event was never sent (the worker died right after finishing)."""
        if job["status"] in TERMINAL and not job.get("notified"):
            self.notify(job)

    def notify(self, job: Mapping[str, Any]) -> None:
        """The job event, and its callback queued for asynchronous delivery; ``notified``
        once both are done (:meth:`ensure_notified` retries what was not)."""
        # Independent of each other: one wave (the event, the callback, the task budget).
        _, published, queued = values(
            run_all(
                [
                    lambda: self._close_task(job),
                    lambda: self.notifier.job_finished(job),
                    lambda: queue_callback(self.store, self.queue, self.settings, job),
                ]
            )
        )
        if published and queued:
            self.store.mark_notified(job["job_id"])

    def _close_task(self, job: Mapping[str, Any]) -> None:
        if self.budgets is None:
            return
        try:  # a finished job spends no more: what dead attempts hold is given back
            self.budgets.close_task(job_scope(job, "main"))
        except Exception:
            logger.exception("closing the job's task budget failed")

    # -- the worker

    def claim(
        self,
        message: JobMessage,
        *,
        agent: str,
        lease_s: float,
        release: Mapping[str, str] | None = None,
    ) -> Item | None:
        """The job, claimed under a lease; None if there is nothing to run. The claim
        records ``release`` (``{"release", "prompt_version"}`` of the worker) on the job.

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
        claimed = self.store.claim(message.job_id, lease_s=lease_s, fields=release)
        if claimed is None:
            latest = self.store.get(message.job_id) or job
            remaining = float(latest.get("lease_until", 0)) - self.store.clock()
            raise JobBusy(
                f"job {message.job_id} is running under another worker's lease",
                retry_after_s=max(1, min(43_200, int(remaining) + 1)),
            )
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
            **correlation.attributes(job.get("correlation_id")),
        }
        execution_arn = self.workflows.start(arn, job["job_id"], json.dumps(execution_input))
        self.store.set_execution(job["job_id"], execution_arn)
        logger.info("workflow started", extra={"execution_arn": execution_arn})

    def tool_context(self, job: Mapping[str, Any], step: str, request_id: str) -> ToolContext:
        """The context of one model step: scoped to the job's tenant, billed to job + step,
        its ``max_cost_usd`` a budget scope the gateway reserves against."""
        return ToolContext(
            tenant_id=job["tenant_id"],
            agent=job["agent"],
            request_id=request_id,
            settings=self.settings,
            scope=job_scope(job, step),
            clients=self.clients,
            # The submitting key's role and end customer (none: ingest, old jobs).
            **Principal.decode(job.get("caller")).context(),
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
        """Record a step once (usage and cost added to the job); its output.

        The step's post-call waves (its call-ledger entries among them) are written
        first: a worker that dies once the recording has begun has its paid calls in
        the ledger, and the next attempt replays them instead of paying again."""
        drain()
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
        delivery: Delivery | None = None,
    ) -> None:
        """Run a claimed single-step job to its end, or raise for another delivery.

        The whole path (budget check, the run, recording the step, routing, finishing
        and notifying) is under the failure decision: on the last delivery any error
        fails the job rather than leave it ``running`` while its message is
        dead-lettered. A takeover whose step was recorded already reuses its output.
        """
        job_id = job["job_id"]
        try:
            # A tool-calling step's post-call waves overlap its tools and next calls;
            # all are written before the step is recorded (``record``), so before the
            # job finishes (finishing closes the task's budget item to new writes).
            with deferred():
                output = self._main_step(job, runner, request_id=request_id, deadline=deadline)
            extra: dict[str, Any] = {}
            routed = self.route(job, output, routes)
            if routed is not None:
                extra["routed_to"] = routed
            done = self.finish_and_notify(
                job_id, "succeeded", result=output, extra=extra, known=job
            )
            if done is None:
                logger.info("job was cancelled while it ran; its result is discarded")
            elif self.reviews is not None:  # the winner only; never raises
                self.reviews.offer_job(job, output, runner)
        except Exception as exc:
            if self.on_failure(job, exc, receives, delivery) != "fail":
                raise

    def launch_workflow(
        self, job: Mapping[str, Any], *, receives: int, delivery: Delivery | None = None
    ) -> None:
        """:meth:`start_workflow` under the same failure decision as :meth:`run`."""
        try:
            self.start_workflow(job)
        except Exception as exc:
            if self.on_failure(job, exc, receives, delivery) != "fail":
                raise

    def _main_step(
        self,
        job: Mapping[str, Any],
        runner: StepRunner,
        *,
        request_id: str,
        deadline: Deadline | None,
    ) -> Any:
        if int(job.get("attempts", 1)) > 1:
            recorded = self.store.step_output(job["job_id"], "main")
            if recorded is not None:
                logger.info("step recorded by an earlier attempt; its output is reused")
                return recorded
        result = self.call_step(
            job, runner, "main", job_input(job), request_id=request_id, deadline=deadline
        )
        return self.record(job, "main", result)

    def on_failure(
        self,
        job: Mapping[str, Any],
        exc: BaseException,
        receives: int,
        delivery: Delivery | None,
    ) -> FailureAction:
        """Apply :func:`failure_action`: release or keep the lease and bring the message
        back after the backoff, or fail the job (and notify)."""
        job_id = job["job_id"]
        action = failure_action(exc, receives, self.settings.job_max_receive_count)
        if action != "fail":
            delay = retry_delay_s(
                receives,
                base_s=self.settings.job_retry_base_s,
                cap_s=self.settings.job_retry_cap_s,
                rng=self.rng,
            )
            logger.warning(
                "job failed; it will be retried",
                extra={"code": job_error(exc)["code"], "retry_in_s": delay, "action": action},
            )
            if action == "release":
                self.store.release(job_id, hold_s=delay)
            self.retry_later(delivery, delay)
            return action
        if isinstance(exc, StratusError) and not isinstance(exc, RETRYABLE):
            logger.info("job failed", extra={"code": exc.code, "error": exc.message})
        else:
            logger.exception("job failed on its last delivery")
        self.finish_and_notify(
            job_id, "failed", error=job_error(exc), task_error=is_task_error(exc)
        )
        return action

    def retry_later(self, delivery: Delivery | None, delay_s: int) -> None:
        """Make the record's message visible again in ``delay_s`` (best effort: if this
        fails, it comes back after the queue's visibility timeout)."""
        if delivery is None or not delivery.queue_url or not delivery.receipt_handle:
            return
        try:
            self.queue.change_visibility(delivery.queue_url, delivery.receipt_handle, delay_s)
        except Exception:
            logger.exception("changing the message visibility failed")

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
            principal=Principal.decode(job.get("caller")),
            correlation_id=correlation.of_record(job),  # the child inherits the parent's id
        )
        logger.info("job routed", extra={"to_agent": target, "child_job_id": child["job_id"]})
        return {"agent": target, "job_id": child["job_id"]}

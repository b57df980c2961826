"""The job worker of one agent (``STRATUS_AGENT``): its queue's consumer and its workflow's tasks.

Two event shapes reach it:

* an **SQS batch** from the agent's own queue (event source mapping with
  ``ReportBatchItemFailures``): Powertools ``BatchProcessor`` runs each record
  and reports only the failed ones, so one bad job never holds back the rest;
* a **workflow task** (``{"action": ..., "job_id": ...}``) from the agent's
  Step Functions state machine (:mod:`functions.handlers.workflow`).

A record is idempotent per job: the job is claimed with a conditional
``queued -> running`` write under a lease as long as this invocation may live.
A redelivered message finds the job finished (acknowledged, nothing runs), or
running under a live lease (retried later), or running under an expired lease
(the previous worker died: this one takes over). Every model call runs under
``CallScope(kind="job", scope_id=job_id, step=...)``, so a takeover replays the
calls the dead worker already paid for from the call ledger.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus.agents import AgentSpec, CallScope, ToolContext
from stratus.config import Settings, get_settings
from stratus.deadline import LambdaDeadline
from stratus.errors import (
    DeadlineExceeded,
    ModelProviderError,
    ModelRateLimited,
    ModelUnavailable,
    StratusError,
)
from stratus.jobs import (
    TERMINAL,
    JobMessage,
    JobRequest,
    JobService,
    JobStore,
    Notifier,
    check_budget,
    job_input,
)
from stratus.observability import logger, metrics, set_agent_dimension, tracer

#: Failures worth another delivery: the provider or the clock, not the request.
RETRYABLE: tuple[type[StratusError], ...] = (
    ModelUnavailable,
    ModelRateLimited,
    ModelProviderError,
    DeadlineExceeded,
)
#: Seconds added to the invocation's remaining time for the lease.
LEASE_MARGIN_S = 5.0

#: A batch whose records all fail is reported record by record, not raised as one error.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class JobBusy(Exception):
    """Another worker holds the job's lease; the message comes back after its visibility timeout."""


class BadJobMessage(Exception):
    """The message is not a job of this agent; after maxReceiveCount it lands in the DLQ."""


@cache
def settings() -> Settings:
    return get_settings()


@cache
def store() -> JobStore:
    s = settings()
    return JobStore(s.jobs_table, retention_days=s.job_retention_days)


@cache
def notifier() -> Notifier:
    return Notifier(settings())


@cache
def spec() -> AgentSpec:
    from functions.agents import load_agent

    return load_agent(settings().agent)


def make_runner(agent_spec: AgentSpec) -> Any:
    """An ``AgentRunner`` for one spec, built as ``InvokeService`` builds its own."""
    from stratus.prices import load_price_table
    from stratus.runner import AgentRunner

    s = settings()
    return AgentRunner(agent_spec, _model(), load_price_table(s.price_table), s)


@cache
def _model() -> Any:
    from stratus.llm import ModelClient

    return ModelClient(settings())


@cache
def runner() -> Any:
    return make_runner(spec())


def tool_context(job: dict[str, Any], step: str, request_id: str) -> ToolContext:
    """The context of one model step: scoped to the job's tenant, billed to job + step."""
    return ToolContext(
        tenant_id=job["tenant_id"],
        agent=job["agent"],
        request_id=request_id,
        settings=settings(),
        scope=CallScope(
            tenant_id=job["tenant_id"],
            agent=job["agent"],
            kind="job",
            scope_id=job["job_id"],
            step=step,
        ),
    )


def finish_and_notify(job_id: str, status: Any, **kwargs: Any) -> dict[str, Any] | None:
    done = store().finish(job_id, status, **kwargs)
    if done is not None:
        metrics.add_metric(name=f"Jobs{status.capitalize()}", unit="Count", value=1)
        notifier().job_finished(done, store())
    return done


def ensure_notified(job: dict[str, Any]) -> None:
    """A finished job whose event was never sent (the worker died right after finishing)."""
    if job["status"] in TERMINAL and not job.get("notified"):
        notifier().job_finished(job, store())


def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> None:
    try:
        message = JobMessage.model_validate_json(record.body)
    except ValueError as exc:
        raise BadJobMessage(f"not a job message: {exc}") from exc
    agent = settings().agent
    if message.agent != agent:
        raise BadJobMessage(f"job {message.job_id} is for {message.agent}, this is {agent}")
    job = store().get(message.job_id)
    if job is None or job["tenant_id"] != message.tenant_id:
        raise BadJobMessage(f"no job {message.job_id} for tenant {message.tenant_id}")
    logger.append_keys(job_id=message.job_id, tenant_id=message.tenant_id)
    if job["status"] in TERMINAL:
        logger.info("job already finished; message acknowledged", extra={"status": job["status"]})
        ensure_notified(job)
        return
    if job.get("execution_arn") or job["status"] == "waiting_approval":
        logger.info("job is in its workflow already; message acknowledged")
        return
    remaining = lambda_context.get_remaining_time_in_millis() / 1000 if lambda_context else 900
    claimed = store().claim(message.job_id, lease_s=remaining + LEASE_MARGIN_S)
    if claimed is None:
        raise JobBusy(f"job {message.job_id} is running under another worker's lease")
    if spec().workflow:
        from functions.handlers.workflow import start_workflow

        start_workflow(claimed)
        return
    run_job(claimed, record, lambda_context)


def run_job(job: dict[str, Any], record: SQSRecord, lambda_context: LambdaContext | None) -> None:
    job_id = job["job_id"]
    request_id = getattr(lambda_context, "aws_request_id", "") or record.message_id
    ctx = tool_context(job, "main", request_id)
    try:
        check_budget(job, ctx.scope)
        result = runner().run(
            job_input(job),
            ctx=ctx,
            deadline=LambdaDeadline(lambda_context) if lambda_context else None,
        )
    except RETRYABLE as exc:
        receives = int(record.attributes.approximate_receive_count or 1)
        if receives < settings().job_max_receive_count:
            logger.warning("job failed; it will be retried", extra={"code": exc.code})
            store().release(job_id)
            raise
        finish_and_notify(job_id, "failed", error={"code": exc.code, "message": exc.message})
        return
    except StratusError as exc:
        logger.info("job failed", extra={"code": exc.code, "error": exc.message})
        finish_and_notify(job_id, "failed", error={"code": exc.code, "message": exc.message})
        return
    except Exception:
        # A bug or an AWS outage: retry; on the last delivery fail the job rather than
        # leave it running while its message goes to the DLQ.
        if (
            int(record.attributes.approximate_receive_count or 1)
            >= settings().job_max_receive_count
        ):
            logger.exception("job failed on its last delivery")
            finish_and_notify(
                job_id, "failed", error={"code": "internal_error", "message": "the job failed"}
            )
            return
        raise
    store().record_step(
        job_id,
        "main",
        usage=result.usage,
        cost_usd=result.cost_usd,
        model=result.model,
        output=result.output,
    )
    extra: dict[str, Any] = {}
    routed = route(job, result.output)
    if routed is not None:
        extra["routed_to"] = routed
    done = finish_and_notify(job_id, "succeeded", result=result.output, extra=extra)
    if done is None:
        logger.info("job was cancelled while it ran; its result is discarded")


def route(job: dict[str, Any], output: Any) -> dict[str, str] | None:
    """Hand the job to the specialized agent the decision names (through that agent's queue)."""
    if not job.get("route") or not isinstance(output, dict):
        return None
    target = spec().routes.get(str(output.get("category", "")))
    if target is None:
        return None
    request = JobRequest(
        agent=target,
        input=job_input(job),
        metadata={**_metadata(job), "routed_from": job["agent"]},
    )
    child, _ = JobService(settings()).submit(
        request,
        tenant_id=job["tenant_id"],
        # Deterministic: a retried routing step finds the same child job.
        idempotency_key=f"route:{job['job_id']}:{target}",
        source="route",
        parent_job_id=job["job_id"],
    )
    logger.info("job routed", extra={"to_agent": target, "child_job_id": child["job_id"]})
    return {"agent": target, "job_id": child["job_id"]}


def _metadata(job: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(job.get("metadata") or "{}")
    return value


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    set_agent_dimension(settings().agent or "unknown")
    if "Records" in event:
        return dict(
            process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )
    from functions.handlers.workflow import handle_task

    return handle_task(event, context)

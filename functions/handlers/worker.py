"""The job worker of one agent (``STRATUS_AGENT``): its queue's consumer and its workflow's tasks.

Two event shapes reach it:

* an **SQS batch** from the agent's own queue (event source mapping with
  ``ReportBatchItemFailures``): Powertools ``BatchProcessor`` runs each record
  and reports only the failed ones, so one bad job never holds back the rest;
* a **workflow task** (``{"action": ..., "job_id": ...}``) from the agent's
  Step Functions state machine.

This module only parses and maps: claiming under a lease, running, the retry
decision by receive count (over the whole path) and its backoff (the record's
message visibility), routing and notifying are
:class:`stratus.jobs.JobService`'s; the workflow's task actions are
:class:`stratus.jobs.workflow.WorkflowTasks`'. Both come from the process's
runtime (:func:`stratus.composition.current`).
"""

from __future__ import annotations

import importlib
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.agents import load_agent
from functions.handlers.batches import sqs_batch
from functions.handlers.common import served_release, tag_served_release
from stratus import composition, correlation, otel
from stratus.agents import AgentSpec, Principal
from stratus.deadline import LambdaDeadline
from stratus.errors import AgentDisabled
from stratus.flags import applied
from stratus.jobs import BadJobMessage, JobBusy, JobMessage
from stratus.jobs.retries import Delivery
from stratus.observability import logger, metrics, set_agent_dimension, tracer
from stratus.workflows import SupervisedWorkflow

#: Seconds added to the invocation's remaining time for the lease.
LEASE_MARGIN_S = 5.0
#: A job of an agent a flag switched off comes back after this long (still queued).
DISABLED_RETRY_S = 300


__all__ = ["BadJobMessage", "JobBusy", "lambda_handler", "record_handler"]


def _served_spec() -> AgentSpec:
    return load_agent(composition.current().settings.agent)


def _workflow_of(spec: AgentSpec) -> SupervisedWorkflow:
    """The ``WORKFLOW`` the agent's package declares."""
    value = getattr(importlib.import_module(f"functions.agents.{spec.name}"), "WORKFLOW", None)
    if not isinstance(value, SupervisedWorkflow):
        raise TypeError(f"agent {spec.name} declares a workflow but has no WORKFLOW")
    return value


def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> None:
    try:
        message = JobMessage.model_validate_json(record.body)
    except ValueError as exc:
        raise BadJobMessage(f"not a job message: {exc}") from exc
    # The message's correlation id (a new one if absent); the job record's wins below.
    carried = correlation.from_message_attributes(record.raw_event.get("messageAttributes"))
    correlation.bind(carried or correlation.new_id())
    logger.info(
        "job message received",
        extra={"job_id": message.job_id, "correlation_from": "message" if carried else "new"},
    )
    runtime = composition.current()
    receives = int(record.attributes.approximate_receive_count or 1)
    # Retries come back after a backoff on this message, not after the visibility timeout.
    delivery = Delivery(runtime.settings.job_queue_url, record.receipt_handle, receives)
    remaining = lambda_context.get_remaining_time_in_millis() / 1000 if lambda_context else 900
    spec = _served_spec()
    try:  # the kill switch, before the claim writes anything: the job stays queued
        runtime.agent_flags(spec, message.tenant_id)
    except AgentDisabled:
        logger.warning(
            "agent disabled by a flag: the job stays queued",
            extra={"job_id": message.job_id, "retry_in_s": DISABLED_RETRY_S},
        )
        runtime.jobs.retry_later(delivery, DISABLED_RETRY_S)
        raise  # a batch item failure: SQS delivers the message again after the delay
    try:
        job = runtime.jobs.claim(
            message,
            agent=runtime.settings.agent,
            lease_s=remaining + LEASE_MARGIN_S,
            release=served_release(),  # recorded on the job by the claim (no extra write)
        )
    except JobBusy as busy:
        runtime.jobs.retry_later(delivery, busy.retry_after_s)
        raise
    if job is None:
        return
    cid = correlation.of_record(job)
    if cid:
        correlation.bind(cid)
    if spec.workflow:
        runtime.jobs.launch_workflow(job, receives=receives, delivery=delivery)
        return
    # The run's flags, with the submitting key's end customer (the record keeps it); the
    # kill switch was decided above, before the claim (a claimed job is not handed back).
    who = Principal.decode(job.get("caller"))
    flags = runtime.agent_flags(spec, str(job["tenant_id"]), who, refuse=False)
    with applied(flags):
        runtime.jobs.run(
            job,
            runtime.runner(spec),
            routes=spec.routes,
            request_id=getattr(lambda_context, "aws_request_id", "") or record.message_id,
            receives=receives,
            deadline=LambdaDeadline(lambda_context) if lambda_context else None,
            delivery=delivery,
        )


def workflow_task(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One task of the agent's workflow (``{"action": ..., "job_id": ...}``)."""
    spec = _served_spec()
    tasks = composition.current().workflow_tasks(spec, _workflow_of(spec))
    return tasks.handle(
        event,
        request_id=getattr(context, "aws_request_id", "") or "",
        deadline=LambdaDeadline(context) if context else None,
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    set_agent_dimension(composition.current().settings.agent or "unknown")
    tag_served_release()
    try:
        if "Records" in event:
            return sqs_batch(event, context, record_handler)
        return workflow_task(event, context)
    finally:
        # The batch's (or task's) audit events, in one write at the end (none: no write).
        composition.current().audit.flush()
        otel.flush()  # its spans (no-op when OTLP export is off)

"""The jobs API (served by the platform function): submit, read, cancel, approve.

``POST /v1/jobs`` writes the job record (conditional put: the same
``Idempotency-Key`` returns the same job) and sends it to the agent's own queue,
answering ``202`` before any model runs. Every route is scoped to the caller's
tenant; another tenant's job answers ``404`` like a missing one.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from functions.handlers.common import ERROR_RESPONSES, tenant_id
from stratus import aws
from stratus.config import get_settings
from stratus.errors import JobAlreadyFinished, JobNotWaitingApproval
from stratus.jobs import (
    TERMINAL,
    ApprovalRequest,
    JobRequest,
    JobService,
    JobSubmitted,
    JobView,
    Notifier,
    view,
)
from stratus.observability import logger

router = Router()


def _tenant() -> str:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    return tenant_id(event)


JOB_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@cache
def _service() -> JobService:
    return JobService(get_settings())


def _json(status: int, body: Any) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, default=str),
    )


@router.post(
    "/v1/jobs",
    summary="Submit an asynchronous job",
    responses={
        202: {
            "description": "Queued (or, with a repeated Idempotency-Key, the existing job)",
            "content": {"application/json": {"model": JobSubmitted}},
        },
        **ERROR_RESPONSES,
    },
)
def submit_job(
    body: Annotated[JobRequest, Body()],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response[str]:
    tenant = _tenant()
    job, _ = _service().submit(
        body, tenant_id=tenant, idempotency_key=idempotency_key, source="api"
    )
    return _json(202, JobSubmitted(job_id=job["job_id"], status=job["status"]).model_dump())


@router.get(
    "/v1/jobs/<job_id>",
    summary="Status, result, usage and cost of a job",
    responses={
        200: {"description": "The job", "content": {"application/json": {"model": JobView}}},
        **ERROR_RESPONSES,
    },
)
def get_job(job_id: JOB_ID) -> dict[str, Any]:
    store = _service().store
    job = store.get_for_tenant(job_id, _tenant())
    return view(job, store.steps(job_id)).model_dump(mode="json")


@router.post(
    "/v1/jobs/<job_id>/cancel",
    summary="Cancel a job that has not finished",
    responses={
        200: {"description": "The job", "content": {"application/json": {"model": JobView}}},
        **ERROR_RESPONSES,
    },
)
def cancel_job(job_id: JOB_ID) -> dict[str, Any]:
    service = _service()
    job = service.store.get_for_tenant(job_id, _tenant())
    if job["status"] in TERMINAL:
        raise JobAlreadyFinished(f"job {job_id} is already {job['status']}")
    done = service.store.finish(
        job_id,
        "cancelled",
        error={"code": "cancelled", "message": "cancelled by the client"},
        from_statuses=("queued", "running", "waiting_approval"),
    )
    if done is None:
        latest = service.store.get_for_tenant(job_id, job["tenant_id"])
        raise JobAlreadyFinished(f"job {job_id} is already {latest['status']}")
    if done.get("execution_arn"):
        try:
            aws.client("stepfunctions").stop_execution(
                executionArn=done["execution_arn"], error="JobCancelled", cause="cancelled"
            )
        except Exception:  # the record says cancelled: every later step stops by itself
            logger.exception("stopping the workflow failed", extra={"job_id": job_id})
        if job.get("task_token"):
            # After StopExecution AWS refuses the token (ignored); an emulator that keeps
            # waiting on it (moto) is released by the failure instead of hanging on.
            try:
                aws.client("stepfunctions").send_task_failure(
                    taskToken=job["task_token"], error="JobCancelled", cause="cancelled"
                )
            except Exception:
                logger.debug("task token already closed", extra={"job_id": job_id})
    Notifier(get_settings()).job_finished(done, service.store)
    logger.info("job cancelled", extra={"job_id": job_id})
    return view(done).model_dump(mode="json")


@router.post(
    "/v1/jobs/<job_id>/approval",
    summary="Approve or reject a job waiting for approval",
    responses={
        200: {"description": "The job", "content": {"application/json": {"model": JobView}}},
        **ERROR_RESPONSES,
    },
)
def approve_job(job_id: JOB_ID, body: Annotated[ApprovalRequest, Body()]) -> dict[str, Any]:
    service = _service()
    job = service.store.get_for_tenant(job_id, _tenant())
    token = job.get("task_token")
    if job["status"] != "waiting_approval" or not token:
        raise JobNotWaitingApproval(f"job {job_id} is {job['status']}, not waiting_approval")
    # The conditional transition admits exactly one answer, whatever races it.
    answered = service.store.answer_approval(job_id, body.approved, body.comment)
    if answered is None:
        raise JobNotWaitingApproval(f"job {job_id} is no longer waiting for approval")
    sfn = aws.client("stepfunctions")
    if body.approved:
        sfn.send_task_success(
            taskToken=token, output=json.dumps({"approved": True, "comment": body.comment})
        )
    else:
        sfn.send_task_failure(
            taskToken=token, error="ApprovalRejected", cause=body.comment or "rejected"
        )
    logger.info("approval answered", extra={"job_id": job_id, "approved": body.approved})
    return view(answered).model_dump(mode="json")

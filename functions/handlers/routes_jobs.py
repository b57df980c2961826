"""The jobs API (served by the platform function): submit, read, cancel, approve.

``POST /v1/jobs`` writes the job record (conditional put: the same
``Idempotency-Key`` returns the same job) and sends it to the agent's own queue,
answering ``202`` before any model runs. Every route is scoped to the caller's
tenant; another tenant's job answers ``404`` like a missing one. The lifecycle
itself is :class:`stratus.jobs.JobService`'s (``composition.current().jobs``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from functions.agents import agent_names, load_agent
from functions.handlers.common import ERROR_RESPONSES, IdempotencyKey, require_scope, tenant_id
from functions.handlers.principals import principal
from stratus import composition
from stratus.jobs import ApprovalRequest, JobRequest, JobSubmitted, JobView

router = Router()

JOB_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
JOB_RESPONSES: dict[int, Any] = {
    200: {"description": "The job", "content": {"application/json": {"model": JobView}}},
    **ERROR_RESPONSES,
}


def _event() -> APIGatewayProxyEvent:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    return event


def _tenant(scope: str = "jobs") -> str:
    """The caller's tenant, once its key has ``scope`` (approval: ``jobs:approve`` only)."""
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    require_scope(event, scope)
    return tenant_id(event)


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
    idempotency_key: IdempotencyKey = None,
) -> Response[str]:
    spec = load_agent(body.agent) if body.agent in agent_names() else None
    runtime, tenant, who = composition.current(), _tenant(), principal(_event())
    if spec is not None:  # 503 agent_disabled before the job record is written
        runtime.agent_flags(spec, tenant, who)
    job, _ = runtime.jobs.submit(
        body,
        tenant_id=tenant,
        idempotency_key=idempotency_key,
        source="api",
        # 413 input_too_large over the agent's limits.max_input_chars or the byte cap.
        max_input_chars=spec.limits.max_input_chars if spec is not None else None,
        # The worker runs the job's tools as the submitting key (role, end customer).
        principal=who,
    )
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(JobSubmitted(job_id=job["job_id"], status=job["status"]).model_dump()),
    )


@router.get(
    "/v1/jobs/<job_id>",
    summary="Status, result, usage and cost of a job",
    responses=JOB_RESPONSES,
)
def get_job(job_id: JOB_ID) -> dict[str, Any]:
    return composition.current().jobs.view_for_tenant(job_id, _tenant()).model_dump(mode="json")


@router.post(
    "/v1/jobs/<job_id>/cancel",
    summary="Cancel a job that has not finished",
    responses=JOB_RESPONSES,
)
def cancel_job(job_id: JOB_ID) -> dict[str, Any]:
    return composition.current().jobs.cancel(job_id, _tenant()).model_dump(mode="json")


@router.post(
    "/v1/jobs/<job_id>/approval",
    summary="Approve or reject a job waiting for approval",
    responses=JOB_RESPONSES,
)
def approve_job(job_id: JOB_ID, body: Annotated[ApprovalRequest, Body()]) -> dict[str, Any]:
    jobs = composition.current().jobs
    tenant = _tenant("jobs:approve")
    by = principal(_event()).key_id  # the approving key, on the job and in the audit trail
    answered = jobs.approve(job_id, tenant, body.approved, body.comment, by=by)
    return answered.model_dump(mode="json")

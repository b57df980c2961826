"""The tasks of a supervised workflow, run by the agent's job worker function.

The state machine (``infra/workflows/<workflow>.asl.json``) invokes the worker
with ``{"action": ..., "job_id": ...}``. Payloads between states stay small:
step outputs live in the jobs table (one item per step), never in the
execution's state, so no 256 KB limit applies to the work itself.

Every costly step runs under ``CallScope(kind="job", scope_id=job_id,
step=<plan | research-<i> | review>)``: a Step Functions retry of a step is the
same scope, so the call ledger replays it instead of paying again, and its
usage is added to the job once (``JobStore.record_step``).
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from typing import Any

from botocore.exceptions import ClientError

from functions.handlers.worker import (
    finish_and_notify,
    make_runner,
    settings,
    spec,
    store,
    tool_context,
)
from stratus import aws
from stratus.deadline import LambdaDeadline
from stratus.errors import StratusError
from stratus.jobs import JobBudgetExceeded, check_budget, job_input
from stratus.observability import logger
from stratus.workflows import SupervisedWorkflow


class JobNotActive(Exception):
    """The job was cancelled or finished while its workflow ran; the workflow stops."""


class ApprovalRejected(Exception):
    """Raised by nobody here: the approval endpoint sends it as the task failure's error."""


@cache
def workflow() -> SupervisedWorkflow:
    module = importlib.import_module(f"functions.agents.{spec().name}")
    value = getattr(module, "WORKFLOW", None)
    if not isinstance(value, SupervisedWorkflow):
        raise TypeError(f"agent {spec().name} declares a workflow but has no WORKFLOW")
    return value


@cache
def _runners() -> dict[str, Any]:
    flow = workflow()
    return {
        "plan": make_runner(flow.planner),
        "research": make_runner(flow.worker),
        "review": make_runner(flow.reviewer),
    }


def start_workflow(job: dict[str, Any]) -> None:
    """Start the job's execution, named after the job: a second start cannot run it twice."""
    arn = settings().workflows.get(job["agent"])
    if not arn:
        raise RuntimeError(f"no state machine configured for agent {job['agent']}")
    execution_input = {
        "job_id": job["job_id"],
        "tenant_id": job["tenant_id"],
        "require_approval": bool(job.get("require_approval")),
        "approval_timeout_s": settings().approval_timeout_s,
    }
    sfn = aws.client("stepfunctions")
    try:
        execution_arn = sfn.start_execution(
            stateMachineArn=arn, name=job["job_id"], input=json.dumps(execution_input)
        )["executionArn"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
            raise
        execution_arn = arn.replace(":stateMachine:", ":execution:") + ":" + job["job_id"]
    store().set_execution(job["job_id"], execution_arn)
    logger.info("workflow started", extra={"execution_arn": execution_arn})


def _active_job(job_id: str) -> dict[str, Any]:
    job = store().get(job_id)
    if job is None or job["status"] != "running":
        raise JobNotActive(f"job {job_id} is {job['status'] if job else 'missing'}")
    return job


def _run(job: dict[str, Any], kind: str, step: str, payload: Any, context: Any) -> Any:
    ctx = tool_context(job, step, getattr(context, "aws_request_id", "") or step)
    check_budget(job, ctx.scope)
    result = _runners()[kind].run(
        payload, ctx=ctx, deadline=LambdaDeadline(context) if context else None
    )
    store().record_step(
        job["job_id"],
        step,
        usage=result.usage,
        cost_usd=result.cost_usd,
        model=result.model,
        output=result.output,
    )
    return result.output


def plan(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job = _active_job(event["job_id"])
    output = _run(job, "plan", "plan", job_input(job), context)
    steps = [str(s) for s in (output.get("steps") or [])] if isinstance(output, dict) else []
    limit = workflow().max_steps
    if len(steps) > limit:
        logger.warning("plan truncated", extra={"planned": len(steps), "kept": limit})
    steps = steps[:limit] or [json.dumps(job_input(job))]
    return {"steps": [{"index": i, "task": task} for i, task in enumerate(steps)]}


def research(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job = _active_job(event["job_id"])
    index = int(event["index"])
    payload = {"question": job_input(job), "research_question": str(event["task"])}
    _run(job, "research", f"research-{index}", payload, context)
    return {"index": index}


def review(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job = _active_job(event["job_id"])
    findings = [
        {"step": str(s["sk"]).removeprefix("STEP#"), "finding": json.loads(s.get("output", "null"))}
        for s in store().steps(job["job_id"])
        if str(s["sk"]).startswith("STEP#research-")
    ]
    _run(job, "review", "review", {"question": job_input(job), "findings": findings}, context)
    return {}


def check(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job = _active_job(event["job_id"])
    step = str(event.get("step", ""))
    if "index" in event:
        step = f"{step}-{event['index']}"
    check_budget(job, tool_context(job, step, "budget").scope)
    return {}


def await_approval(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if store().await_approval(event["job_id"], str(event["task_token"])) is None:
        raise JobNotActive(f"job {event['job_id']} is not running; cannot wait for approval")
    logger.info("job waits for approval")
    return {}


def complete(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = event["job_id"]
    result = store().step_output(job_id, "review")
    if finish_and_notify(job_id, "succeeded", result=result) is None:
        logger.info("job already left running; completion skipped")
    return {}


#: Error names of the workflow -> stable job error codes.
ERROR_CODES = {
    "ApprovalRejected": "approval_rejected",
    "States.Timeout": "approval_timeout",
    "JobNotActive": "job_not_active",
}


def _error_code(name: str) -> str:
    if name in ERROR_CODES:
        return ERROR_CODES[name]
    pending: list[type[StratusError]] = [StratusError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls.code
        pending.extend(cls.__subclasses__())
    return "workflow_failed"


def fail(event: dict[str, Any], context: Any) -> dict[str, Any]:
    error = event.get("error") or {}
    name = str(error.get("Error") or "States.Runtime")
    cause = str(error.get("Cause") or "")
    try:  # a Lambda error's cause is its JSON error object
        parsed = json.loads(cause)
        message = str(parsed.get("errorMessage", cause)) if isinstance(parsed, dict) else cause
    except ValueError:
        message = cause
    if name == "ApprovalRejected":
        # The reviewer's comment is on the job record (moto's SendTaskFailure drops the cause).
        job = store().get(event["job_id"]) or {}
        message = str((job.get("approval") or {}).get("comment") or message or "rejected")
    failure = {"code": _error_code(name), "message": message[:2000] or name, "error": name}
    done = finish_and_notify(event["job_id"], "failed", error=failure)
    logger.info("workflow failed", extra={"error": name, "recorded": done is not None})
    return {}


ACTIONS = {
    "check_budget": check,
    "plan": plan,
    "research": research,
    "review": review,
    "await_approval": await_approval,
    "complete": complete,
    "fail": fail,
}


def handle_task(event: dict[str, Any], context: Any) -> dict[str, Any]:
    action = ACTIONS.get(str(event.get("action")))
    if action is None or "job_id" not in event:
        raise ValueError(f"not a workflow task: {sorted(event)}")
    logger.append_keys(job_id=event["job_id"], workflow_action=event["action"])
    return action(event, context)


__all__ = ["ApprovalRejected", "JobBudgetExceeded", "handle_task", "start_workflow"]

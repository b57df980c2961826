"""The tasks of a supervised workflow: what its state machine asks the job worker to do.

The state machine (``infra/workflows/<workflow>.asl.json``) invokes the worker
with ``{"action": ..., "job_id": ...}``. Payloads between states stay small:
step outputs live in the jobs table (one item per step), never in the
execution's state, so no 256 KB limit applies to the work itself.

Every costly step runs under ``CallScope(kind="job", scope_id=job_id,
step=<plan | research-<i> | review>)``: a Step Functions retry of a step is the
same scope, so the call ledger replays it instead of paying again, and its
usage is added to the job once. Error class names matter: the state machine
matches them (``JobNotActive``, ``ApprovalRejected``, ``JobBudgetExceeded``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from stratus import correlation
from stratus.deadline import Deadline
from stratus.errors import StratusError
from stratus.jobs.contracts import STEP_PREFIX, check_budget, job_input
from stratus.jobs.ports import StepRunner
from stratus.jobs.service import JobService
from stratus.jobs.store import Item
from stratus.observability import logger
from stratus.task_metrics import approval_awaited, task_clock, task_ended
from stratus.workflows import SupervisedWorkflow

Event = Mapping[str, Any]


class JobNotActive(Exception):
    """The job was cancelled or finished while its workflow ran; the workflow stops."""


class ApprovalRejected(Exception):
    """The error name the approval endpoint sends as the task failure (never raised here)."""


#: Error names of the workflow -> stable job error codes.
ERROR_CODES = {
    "ApprovalRejected": "approval_rejected",
    "States.Timeout": "approval_timeout",
    "JobNotActive": "job_not_active",
}


def error_code(name: str) -> str:
    """The job error code of a workflow error name (a :class:`StratusError` class's code)."""
    if name in ERROR_CODES:
        return ERROR_CODES[name]
    pending: list[type[StratusError]] = [StratusError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls.code
        pending.extend(cls.__subclasses__())
    return "workflow_failed"


class WorkflowTasks:
    """The task actions of one agent's supervised workflow."""

    def __init__(
        self, jobs: JobService, flow: SupervisedWorkflow, runners: Mapping[str, StepRunner]
    ) -> None:
        self.jobs = jobs
        self.flow = flow
        #: ``plan``, ``research`` and ``review`` runners.
        self.runners = dict(runners)
        self.actions: dict[str, Callable[[Event, str, Deadline | None], dict[str, Any]]] = {
            "check_budget": self.check,
            "plan": self.plan,
            "research": self.research,
            "review": self.review,
            "await_approval": self.await_approval,
            "complete": self.complete,
            "fail": self.fail,
        }

    def handle(
        self, event: Event, *, request_id: str = "", deadline: Deadline | None = None
    ) -> dict[str, Any]:
        action = self.actions.get(str(event.get("action")))
        if action is None or "job_id" not in event:
            raise ValueError(f"not a workflow task: {sorted(event)}")
        logger.append_keys(job_id=event["job_id"], workflow_action=event["action"])
        # The execution input's id when a task passes it; else the job record's (below).
        cid = correlation.of_record(event)
        if cid:
            correlation.bind(cid)
        else:
            correlation.clear()
        return action(event, request_id, deadline)

    def _active_job(self, job_id: str) -> Item:
        job = self.jobs.store.get(job_id)
        if job is None or job["status"] != "running":
            raise JobNotActive(f"job {job_id} is {job['status'] if job else 'missing'}")
        cid = correlation.of_record(job)
        if cid and cid != correlation.current():
            correlation.bind(cid)
        return job

    def _run(
        self, job: Item, kind: str, step: str, payload: Any, request_id: str, deadline: Any
    ) -> Any:
        started, agent = task_clock(), str(job["agent"])  # the step's metrics: task_metrics
        try:
            result = self.jobs.call_step(
                job,
                self.runners[kind],
                step,
                payload,
                request_id=request_id or step,
                deadline=deadline,
            )
        except Exception as exc:
            task_ended(agent, "workflow_step", error=exc, started=started)
            raise
        task_ended(agent, "workflow_step", result=result, started=started)
        return self.jobs.record(job, step, result)

    def plan(self, event: Event, request_id: str, deadline: Deadline | None) -> dict[str, Any]:
        job = self._active_job(event["job_id"])
        output = self._run(job, "plan", "plan", job_input(job), request_id, deadline)
        steps = [str(s) for s in (output.get("steps") or [])] if isinstance(output, dict) else []
        limit = self.flow.max_steps
        if len(steps) > limit:
            logger.warning("plan truncated", extra={"planned": len(steps), "kept": limit})
        steps = steps[:limit] or [json.dumps(job_input(job))]
        return {"steps": [{"index": i, "task": task} for i, task in enumerate(steps)]}

    def research(self, event: Event, request_id: str, deadline: Deadline | None) -> dict[str, Any]:
        job = self._active_job(event["job_id"])
        index = int(event["index"])
        payload = {"question": job_input(job), "research_question": str(event["task"])}
        self._run(job, "research", f"research-{index}", payload, request_id, deadline)
        return {"index": index}

    def review(self, event: Event, request_id: str, deadline: Deadline | None) -> dict[str, Any]:
        job = self._active_job(event["job_id"])
        findings = [
            {
                "step": str(s["sk"]).removeprefix(STEP_PREFIX),
                "finding": json.loads(s.get("output", "null")),
            }
            for s in self.jobs.store.steps(job["job_id"])
            if str(s["sk"]).startswith(STEP_PREFIX + "research-")
        ]
        payload = {"question": job_input(job), "findings": findings}
        self._run(job, "review", "review", payload, request_id, deadline)
        return {}

    def check(self, event: Event, request_id: str, deadline: Deadline | None) -> dict[str, Any]:
        job = self._active_job(event["job_id"])
        step = str(event.get("step", ""))
        if "index" in event:
            step = f"{step}-{event['index']}"
        check_budget(job, self.jobs.tool_context(job, step, "budget").scope)
        return {}

    def await_approval(
        self, event: Event, request_id: str, deadline: Deadline | None
    ) -> dict[str, Any]:
        waiting = self.jobs.store.await_approval(event["job_id"], str(event["task_token"]))
        if waiting is None:
            raise JobNotActive(f"job {event['job_id']} is not running; cannot wait for approval")
        approval_awaited(str(waiting.get("agent") or "-"))  # WorkflowsWaitingApproval
        logger.info("job waits for approval")
        return {}

    def complete(self, event: Event, request_id: str, deadline: Deadline | None) -> dict[str, Any]:
        job_id = event["job_id"]
        result = self.jobs.store.step_output(job_id, "review")
        if self.jobs.finish_and_notify(job_id, "succeeded", result=result) is None:
            logger.info("job already left running; completion skipped")
        return {}

    def fail(self, event: Event, request_id: str, deadline: Deadline | None) -> dict[str, Any]:
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
            job = self.jobs.store.get(event["job_id"]) or {}
            message = str((job.get("approval") or {}).get("comment") or message or "rejected")
        failure = {"code": error_code(name), "message": message[:2000] or name, "error": name}
        done = self.jobs.finish_and_notify(event["job_id"], "failed", error=failure)
        logger.info("workflow failed", extra={"error": name, "recorded": done is not None})
        return {}

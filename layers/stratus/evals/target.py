"""The in-process target: agents run through a :class:`stratus.composition.Runtime`.

The same runner, gateway (budgets, ledger, keys, breaker) and tools a function
uses; the model is whatever OpenAI-compatible endpoint the runtime's settings
name. What a case observes is what the API would return for it, from the same
records (the runner's tool calls, the session turn's reply, the job's record),
so the in-process runtime and ``--api`` give the same verdicts.

* ``invoke``: one :class:`~stratus.runner.AgentRunner` run, as ``POST .../invoke``.
* a list of turns: one session through a :class:`~stratus.sessions.SessionService`
  whose runner records the context (earlier messages) each turn's model call carried.
* ``job``: one job through a :class:`~stratus.jobs.JobService` on the runtime's jobs
  table (an in-memory queue: the job runs here, as its worker would run it): claim,
  the agent's run and its ``routes`` (a routed child job is recorded, not run), or,
  for an agent with a supervised workflow, the state machine's tasks in order
  (check_budget, plan, check_budget + research per step, check_budget, review,
  complete; ``fail`` on an error), with the workflow's own specs.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stratus.agents import AgentSpec, CallScope, ToolContext
from stratus.evals.checks import Observation, ToolCall

if TYPE_CHECKING:
    from stratus.composition import Runtime
    from stratus.evals.models import Case
    from stratus.jobs.service import JobService
    from stratus.jobs.store import Item
    from stratus.runner import AgentRunner
    from stratus.sessions import SessionService
    from stratus.workflows import SupervisedWorkflow

EVAL_TENANT = "eval-tenant"
#: The lease an in-process job is claimed under (it runs to its end in this call).
JOB_LEASE_S = 900.0
#: Why tool assertions cannot be checked on a job: its record keeps no tool calls.
JOB_TOOLS_UNOBSERVABLE = "tool calls of a job are not observable (the job record keeps none)"


class JobDidNotSucceed(Exception):
    """A job case's job ended failed or cancelled (``code``: the job's error code)."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        error = job.get("error") or {}
        self.code = str(error.get("code") or job.get("status") or "job_failed")
        super().__init__(
            f"job {job.get('job_id')} ended {job.get('status')}: {error.get('message', '')}"
        )


def tool_calls_of(raw: Any) -> list[ToolCall]:
    """``[{"name", "arguments"}, ...]`` (an API answer's ``tool_calls``) as :class:`ToolCall`."""
    calls = []
    for call in raw or ():
        if isinstance(call, Mapping) and isinstance(call.get("name"), str):
            arguments = call.get("arguments")
            calls.append(
                ToolCall(call["name"], dict(arguments) if isinstance(arguments, Mapping) else {})
            )
    return calls


def job_observation(job: Mapping[str, Any], *, latency_s: float, fake_model: bool) -> Observation:
    """A finished job (its ``GET /v1/jobs/{id}`` view) as an observation."""
    if job.get("status") != "succeeded":
        raise JobDidNotSucceed(job)
    steps = [s for s in job.get("steps") or () if isinstance(s, Mapping)]
    usage = job.get("usage") or {}
    routed = job.get("routed_to") or {}
    models = [str(s["model"]) for s in steps if s.get("model")]
    result = job.get("result")
    return Observation(
        output=result if isinstance(result, str | dict) else json.dumps(result),
        model=models[-1] if models else "",
        cost_usd=float(job.get("cost_usd") or 0.0),
        latency_s=latency_s,
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        fake_model=fake_model,
        tool_calls_unobservable=JOB_TOOLS_UNOBSERVABLE,
        routed_to=str(routed["agent"]) if routed.get("agent") else None,
        steps=[str(s.get("name")) for s in steps],
    )


class InProcessTarget:
    def __init__(
        self,
        runtime: Runtime,
        specs: Mapping[str, AgentSpec],
        tenant_id: str = EVAL_TENANT,
        *,
        workflows: Mapping[str, SupervisedWorkflow] | None = None,
    ) -> None:
        self._runtime = runtime
        self._tenant = tenant_id
        self._lock = threading.Lock()
        self._specs = dict(specs)
        #: Agent -> its supervised workflow (the agent package's ``WORKFLOW``).
        self._workflows = dict(workflows or {})
        self._runners: dict[str, AgentRunner] = {}
        self._session_services: dict[str, SessionService] = {}
        self._job_service: JobService | None = None
        #: Request id -> the earlier conversation a session turn's model call carried.
        self._contexts: dict[str, list[dict[str, Any]]] = {}
        #: Request id -> the categories the guardrails flagged on a session turn's message.
        self._flags: dict[str, list[str]] = {}

    def spec(self, agent: str) -> AgentSpec:
        return self._specs[agent]

    def model(self, agent: str) -> str:
        return self._runtime.settings.model_for(self._specs[agent].tier)

    def release(self, agent: str) -> str:
        """The agent's release id (``stratus.releases``), as its function reports it."""
        return self._runtime.release_for(self._specs[agent])

    def output_schema(self, agent: str) -> dict[str, Any] | None:
        schema = self._specs[agent].output_schema
        return None if schema is None else schema.model_json_schema()

    def _sessions(self, agent: str) -> SessionService:
        """The agent's session service, its runner recording each turn's context."""
        from stratus.runner import AgentRunner
        from stratus.sessions import DynamoSessionStore, SessionService, summarizer_spec

        spec = self._specs[agent]
        if spec.sessions is None:
            raise ValueError(f"agent {agent} has no sessions: a list of turns needs one")
        rt, contexts, lock, flags = self._runtime, self._contexts, self._lock, self._flags

        class Recording(AgentRunner):
            def run(self, user_input: Any, **kwargs: Any) -> Any:
                request_id = kwargs["ctx"].request_id
                with lock:
                    contexts[request_id] = list(kwargs.get("history") or ())
                result = super().run(user_input, **kwargs)
                with lock:  # what the guardrails flagged on this turn's message
                    flags[request_id] = list(result.guardrail_flags)
                return result

        with lock:
            if agent not in self._session_services:
                self._session_services[agent] = SessionService(
                    spec,
                    rt.settings,
                    DynamoSessionStore(rt.clients.table(rt.settings.sessions_table)),
                    rt.wire(Recording(spec, rt.gateway, rt.prices, rt.settings)),
                    rt.summarizer_runner(summarizer_spec(spec.sessions)),
                    clients=rt.clients,
                )
            return self._session_services[agent]

    def _session(self, agent: str, turns: list[str]) -> Observation:
        service = self._sessions(agent)
        started = time.perf_counter()
        session_id = service.create(self._tenant, {"source": "eval"})["session_id"]
        answers: list[str | dict[str, Any]] = []
        calls: list[ToolCall] = []
        cost, tokens_in, tokens_out, context = 0.0, 0, 0, None
        flags: list[str] = []
        for text in turns:
            request_id = f"eval-{uuid.uuid4().hex}"
            try:
                reply = service.post_message(self._tenant, session_id, text, request_id=request_id)
            finally:
                with self._lock:
                    context = self._contexts.pop(request_id, None)
                    flags = self._flags.pop(request_id, [])
            answers.append(reply["reply"])
            calls += tool_calls_of(reply.get("tool_calls"))
            cost += float(reply["cost_usd"])
            tokens_in += int(reply["usage"]["input_tokens"])
            tokens_out += int(reply["usage"]["output_tokens"])
        return Observation(
            output=answers[-1],
            model=self.model(agent),
            cost_usd=cost,
            latency_s=time.perf_counter() - started,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            tool_calls=calls,
            fake_model=False,
            turns=answers,
            context=context,
            flags=flags,
        )

    def _runner(self, spec: AgentSpec) -> AgentRunner:
        from stratus.runner import AgentRunner

        with self._lock:
            if spec.name not in self._runners:
                rt = self._runtime
                self._runners[spec.name] = rt.wire(
                    AgentRunner(spec, rt.gateway, rt.prices, rt.settings)
                )
            return self._runners[spec.name]

    def run_case(self, agent: str, case: Case) -> Observation:
        """One run of ``case``: an invoke, a session (a list of turns) or a job."""
        if case.mode == "job":
            assert not isinstance(case.input, list)  # the model refuses a job of turns
            return self.run_job(agent, case.input, route=case.route)
        return self.run(agent, case.input)

    def run(self, agent: str, user_input: str | dict[str, Any] | list[str]) -> Observation:
        if isinstance(user_input, list):
            return self._session(agent, user_input)
        runner = self._runner(self._specs[agent])
        request_id = f"eval-{uuid.uuid4().hex}"
        scope = CallScope(
            tenant_id=self._tenant,
            agent=agent,
            kind="request",
            scope_id=request_id,
            replayable=False,
        )
        ctx = ToolContext(
            tenant_id=self._tenant,
            agent=agent,
            request_id=request_id,
            scope=scope,
            settings=self._runtime.settings,
            clients=self._runtime.clients,
        )
        started = time.perf_counter()
        result = runner.run(user_input, ctx=ctx)
        return Observation(
            output=result.output,
            model=result.model,
            cost_usd=float(result.cost_usd),
            latency_s=time.perf_counter() - started,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            tool_calls=[ToolCall(c.name, c.arguments) for c in result.tool_calls],
            fake_model=result.fake_model,
            flags=list(result.guardrail_flags),
        )

    # -- jobs

    def _jobs(self) -> JobService:
        """A JobService on the runtime's jobs table (in memory without one), every agent
        known to it (routes name agents that are not evaluated) on an in-memory queue."""
        from stratus.jobs.memory import MemoryEvents, MemoryJobStore, MemoryQueue
        from stratus.jobs.notifications import Notifier
        from stratus.jobs.service import JobService

        with self._lock:
            if self._job_service is None:
                rt = self._runtime
                names = set(self._specs)
                names.update(t for spec in self._specs.values() for t in spec.routes.values())
                queues = {name: f"memory://eval-jobs/{name}" for name in sorted(names)}
                settings = rt.settings.model_copy(update={"job_queues": queues})
                store = rt.job_store if settings.jobs_table else MemoryJobStore()
                self._job_service = JobService(
                    store,
                    MemoryQueue(),
                    Notifier(publisher=MemoryEvents()),
                    settings=settings,
                    clients=rt.clients,
                )
            return self._job_service

    def run_job(self, agent: str, user_input: str | dict[str, Any], *, route: bool) -> Observation:
        """One job of ``agent``, run to its end here; observed as ``GET /v1/jobs/{id}``."""
        from stratus.jobs.contracts import JobMessage, JobRequest, view

        service = self._jobs()
        spec = self._specs[agent]
        started = time.perf_counter()
        job, _ = service.submit(
            JobRequest(agent=agent, input=user_input, route=route, metadata={"source": "eval"}),
            tenant_id=self._tenant,
            idempotency_key=None,
            source="eval",
            max_input_chars=spec.limits.max_input_chars,
        )
        message = JobMessage(job_id=job["job_id"], tenant_id=self._tenant, agent=agent)
        claimed = service.claim(message, agent=agent, lease_s=JOB_LEASE_S)
        if claimed is None:  # a fresh random id: never already finished or running
            raise RuntimeError(f"job {job['job_id']} could not be claimed")
        request_id = f"eval-{uuid.uuid4().hex}"
        if spec.workflow:
            self._workflow(service, spec, claimed, request_id)
        else:
            service.run(
                claimed,
                self._runner(spec),
                routes=spec.routes,
                request_id=request_id,
                # As on the last delivery: any failure fails the job instead of a retry.
                receives=service.settings.job_max_receive_count,
            )
        job_id = job["job_id"]
        done = service.store.get(job_id) or claimed
        seen = view(done, service.store.steps(job_id)).model_dump(mode="json")
        return job_observation(seen, latency_s=time.perf_counter() - started, fake_model=False)

    def _workflow(self, service: JobService, spec: AgentSpec, job: Item, request_id: str) -> None:
        """The supervised workflow's tasks in the state machine's order."""
        from stratus.jobs.workflow import WorkflowTasks

        flow = self._workflows.get(spec.name)
        if flow is None:
            raise ValueError(
                f"agent {spec.name} runs the workflow {spec.workflow!r}, but the in-process "
                "target was given no WORKFLOW for it"
            )
        runners = {
            "plan": self._runner(flow.planner),
            "research": self._runner(flow.worker),
            "review": self._runner(flow.reviewer),
        }
        tasks = WorkflowTasks(service, flow, runners)
        base = {"job_id": job["job_id"]}

        def task(action: str, **fields: Any) -> dict[str, Any]:
            return tasks.handle({"action": action, **base, **fields}, request_id=request_id)

        try:
            task("check_budget", step="plan")
            for step in task("plan")["steps"]:
                task("check_budget", step="research", index=step["index"])
                task("research", index=step["index"], task=step["task"])
            task("check_budget", step="review")
            task("review")
            task("complete")
        except Exception as exc:  # the state machine's Catch -> MarkFailed
            cause = json.dumps({"errorMessage": str(exc)})
            task("fail", error={"Error": type(exc).__name__, "Cause": cause})

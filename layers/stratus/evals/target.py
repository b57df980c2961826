"""The in-process target: agents run through a :class:`stratus.composition.Runtime`.

The same runner, gateway (budgets, ledger, keys, breaker) and tools a function
uses; the model is whatever OpenAI-compatible endpoint the runtime's settings
name. Each tool is wrapped to record the arguments it was called with, keyed
by the run's request id, so concurrent cases never see each other's calls.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stratus.agents import AgentSpec, CallScope, Tool, ToolContext
from stratus.evals.checks import Observation, ToolCall

if TYPE_CHECKING:
    from stratus.composition import Runtime
    from stratus.runner import AgentRunner
    from stratus.sessions import SessionService

EVAL_TENANT = "eval-tenant"


class InProcessTarget:
    def __init__(
        self, runtime: Runtime, specs: Mapping[str, AgentSpec], tenant_id: str = EVAL_TENANT
    ) -> None:
        self._runtime = runtime
        self._tenant = tenant_id
        self._lock = threading.Lock()
        self._calls: dict[str, list[ToolCall]] = {}
        self._specs = {name: self._recording(spec) for name, spec in specs.items()}
        self._runners: dict[str, AgentRunner] = {}
        self._session_services: dict[str, SessionService] = {}
        #: Request id -> the earlier conversation a session turn's model call carried.
        self._contexts: dict[str, list[dict[str, Any]]] = {}

    def spec(self, agent: str) -> AgentSpec:
        return self._specs[agent]

    def model(self, agent: str) -> str:
        return self._runtime.settings.model_for(self._specs[agent].tier)

    def release(self, agent: str) -> str:
        return self._specs[agent].version

    def output_schema(self, agent: str) -> dict[str, Any] | None:
        schema = self._specs[agent].output_schema
        return None if schema is None else schema.model_json_schema()

    def _recording(self, spec: AgentSpec) -> AgentSpec:
        def wrap(tool: Tool) -> Tool:
            def fn(args: Any, ctx: ToolContext) -> Any:
                with self._lock:
                    self._calls.setdefault(ctx.request_id, []).append(
                        ToolCall(tool.name, args.model_dump(mode="json"))
                    )
                return tool.fn(args, ctx)

            return replace(tool, fn=fn)

        return spec.model_copy(update={"tools": tuple(wrap(t) for t in spec.tools)})

    def _sessions(self, agent: str) -> SessionService:
        """The agent's session service, its runner recording each turn's context."""
        from stratus.runner import AgentRunner
        from stratus.sessions import DynamoSessionStore, SessionService, summarizer_spec

        spec = self._specs[agent]
        if spec.sessions is None:
            raise ValueError(f"agent {agent} has no sessions: a list of turns needs one")
        rt, contexts, lock = self._runtime, self._contexts, self._lock

        class Recording(AgentRunner):
            def run(self, user_input: Any, **kwargs: Any) -> Any:
                with lock:
                    contexts[kwargs["ctx"].request_id] = list(kwargs.get("history") or ())
                return super().run(user_input, **kwargs)

        with lock:
            if agent not in self._session_services:
                self._session_services[agent] = SessionService(
                    spec,
                    rt.settings,
                    DynamoSessionStore(rt.clients.table(rt.settings.sessions_table)),
                    Recording(spec, rt.gateway, rt.prices, rt.settings),
                    AgentRunner(summarizer_spec(spec.sessions), rt.gateway, rt.prices, rt.settings),
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
        for text in turns:
            request_id = f"eval-{uuid.uuid4().hex}"
            try:
                reply = service.post_message(self._tenant, session_id, text, request_id=request_id)
            finally:
                with self._lock:
                    calls += self._calls.pop(request_id, [])
                    context = self._contexts.pop(request_id, None)
            answers.append(reply["reply"])
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
        )

    def _runner(self, agent: str) -> AgentRunner:
        from stratus.runner import AgentRunner

        with self._lock:
            if agent not in self._runners:
                rt = self._runtime
                self._runners[agent] = AgentRunner(
                    self._specs[agent], rt.gateway, rt.prices, rt.settings
                )
            return self._runners[agent]

    def run(self, agent: str, user_input: str | dict[str, Any] | list[str]) -> Observation:
        if isinstance(user_input, list):
            return self._session(agent, user_input)
        runner = self._runner(agent)
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
        try:
            result = runner.run(user_input, ctx=ctx)
        finally:
            with self._lock:
                calls = self._calls.pop(request_id, [])
        return Observation(
            output=result.output,
            model=result.model,
            cost_usd=float(result.cost_usd),
            latency_s=time.perf_counter() - started,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            tool_calls=calls,
            fake_model=result.fake_model,
        )

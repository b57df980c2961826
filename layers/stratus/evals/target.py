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

    def spec(self, agent: str) -> AgentSpec:
        return self._specs[agent]

    def model(self, agent: str) -> str:
        return self._runtime.settings.model_for(self._specs[agent].tier)

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

    def _runner(self, agent: str) -> AgentRunner:
        from stratus.runner import AgentRunner

        with self._lock:
            if agent not in self._runners:
                rt = self._runtime
                self._runners[agent] = AgentRunner(
                    self._specs[agent], rt.gateway, rt.prices, rt.settings
                )
            return self._runners[agent]

    def run(self, agent: str, user_input: str | dict[str, Any]) -> Observation:
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

"""The agent runner: one agent invocation, from input to priced result.

It builds the prompt from the agent's versioned system prompt, runs the
function-calling loop within the agent's iteration limit, validates structured
output against the agent's schema, and adds up usage and cost over every model
call. It knows nothing about Lambda or HTTP.

Tool permissions: the model is offered only the tools ``ctx.role`` may use
(:meth:`stratus.agents.Tool.permits`); a call to another one is never executed, the
model gets ``{"error": "tool_not_permitted"}`` back, and ``tool.denied`` is audited.
Every executed call is audited ``tool.executed`` (tool, SHA-256 of the canonical
arguments, outcome, result size, duration). Events are buffered (``AuditTrail.record``);
the handler flushes them once per request, so the runner adds no DynamoDB round trip.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import openai
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from stratus.agents import AgentSpec, CallScope, Tool, ToolContext
from stratus.audit import AuditTrail
from stratus.config import ModelTier, Settings
from stratus.deadline import Deadline
from stratus.errors import (
    InputTooLarge,
    MaxIterationsExceeded,
    ModelOutputInvalid,
    OutputBlocked,
    StratusError,
)
from stratus.flags.decisions import AgentFlags, bound, model_choice, prompt_version
from stratus.guardrails.classifier import classify_input, moderate_output
from stratus.guardrails.screen import TAINTED_CALL, Guardrails, system_prompt
from stratus.guardrails.stream import StreamRedactor
from stratus.llm import ChatResult
from stratus.observability import logger
from stratus.prices import PriceTable
from stratus.stream_events import OnEvent, tool_event
from stratus.tool_log import tool_executed
from stratus.usage import Usage

TOOL_RESULT_MAX_CHARS = 16_000
#: What the model sees for a tool its caller's role may not use (never executed).
TOOL_NOT_PERMITTED = "tool_not_permitted"


class ChatModel(Protocol):
    """What the runner calls: ``stratus.gateway.ModelGateway`` (or a test double)."""

    def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_output_tokens: int,
        tools: list[Any] = ...,
        tool_choice: str | None = ...,
        response_format: type[BaseModel] | None = ...,
        deadline: Deadline | None = ...,
        scope: CallScope | None = ...,
        step: str = ...,
        agent: str = ...,
        tier: ModelTier | None = ...,
        allow_downgrade: bool = ...,
        cache_ttl_s: int | None = ...,
        on_delta: Callable[[str], None] | None = ...,
    ) -> ChatResult: ...


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call the runner executed: its name and the arguments the model passed.

    ``arguments`` is the JSON object the model sent, as parsed; arguments that are not
    a JSON object (invalid JSON, a bare value) are kept as text under ``_raw``.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, arguments: str | None) -> ToolCallRecord:
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return cls(name, {RAW_ARGUMENTS: arguments or ""})
        return cls(name, parsed)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


#: The key under which arguments that are not a JSON object are kept as text.
RAW_ARGUMENTS = "_raw"


@dataclass
class AgentResult:
    output: str | dict[str, Any]
    model: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    model_calls: int = 0
    #: Every tool call executed, in order (name and arguments).
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    fake_model: bool = False
    price_table_version: str = ""
    #: Models that failed before the one that answered (fallbacks), in order.
    fallback_from: list[str] = field(default_factory=list)
    downgraded: bool = False
    #: Model calls replayed from the call ledger / served by the response cache.
    ledger_hits: int = 0
    cache_hits: int = 0
    #: Screening categories the guardrails flagged on the input (``flag`` action).
    guardrail_flags: list[str] = field(default_factory=list)

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools called, in order (for logs)."""
        return [call.name for call in self.tool_calls]


class AgentRunner:
    def __init__(
        self,
        spec: AgentSpec,
        model: ChatModel,
        prices: PriceTable,
        settings: Settings,
    ) -> None:
        self.spec = spec
        # Every model call goes through the gateway (budgets, ledger, keys, breaker).
        self._model = model
        self._prices = prices
        self._settings = settings
        #: The audit trail tool executions and denials go to (the composition root sets it).
        self.audit: AuditTrail | None = None
        #: Long-term memory (``stratus.memory.agent.AgentMemory``; the composition root sets
        #: it for a spec with ``memory``): recall before the first call, the tools' handle.
        self.memory: Any = None
        #: Input screening, tool-result framing, output filtering (``spec.guardrails``).
        self.guardrails = Guardrails(spec.name, spec.guardrails)
        #: False for a runner whose input was screened already (the session summarizer).
        self.screen_inputs = True
        self._tools = [
            openai.pydantic_function_tool(t.args, name=t.name, description=t.description)
            for t in spec.tools
        ]
        self._tool_defs = {t.name: d for t, d in zip(spec.tools, self._tools, strict=True)}
        #: Prompt versions other than the spec's that a ``prompt_version`` flag asked for.
        self._prompts: dict[str, str] = {}

    def offered_tools(self, role: str | None, flags: AgentFlags | None = None) -> list[Any]:
        """The tool definitions the model is offered for a caller with ``role`` and the
        request's ``flags`` (every tool when both allow them all: the same list, so prompts
        and caches stay equal)."""
        allowed = self.spec.tools_for(role)
        if flags is not None and flags.changes_tools:
            allowed = tuple(t for t in allowed if flags.offers(t.name))
        if len(allowed) == len(self.spec.tools):
            return self._tools
        return [self._tool_defs[t.name] for t in allowed]

    @property
    def model_name(self) -> str:
        return self._settings.model_for(self.spec.tier)

    def _system_prompt(self, flags: AgentFlags) -> str:
        """The spec's prompt, or the ``prompt_version`` flag's (read once per process)."""
        if flags.prompt_version is None or flags.prompt_version == self.spec.prompt_version:
            return self.spec.system_prompt
        return prompt_version(self.spec, flags.prompt_version, self._prompts)

    def run(
        self,
        user_input: str | dict[str, Any],
        *,
        ctx: ToolContext,
        deadline: Deadline | None = None,
        history: Sequence[dict[str, Any]] = (),
        on_event: OnEvent | None = None,
    ) -> AgentResult:
        """Run the agent on ``user_input``.

        ``history`` is earlier conversation (chat messages: a summary as a system
        message, then user/assistant turns) placed between the system prompt and
        the new input; the caller decides what fits the agent's context budget.
        """
        text = user_input if isinstance(user_input, str) else json.dumps(user_input, sort_keys=True)
        limit = self.spec.limits.max_input_chars
        if len(text) > limit:
            raise InputTooLarge(
                f"input is {len(text)} characters; agent {self.spec.name} accepts at most {limit}",
                details={"limit": limit, "size": len(text)},
            )
        # The request's feature flags (bound by the handler; the defaults change nothing).
        flags = bound(self.spec.name)
        messages: list[dict[str, Any]] = [
            # With tools: plus the rule that tool results are data, never instructions.
            {"role": "system", "content": system_prompt(self._system_prompt(flags), self._tools)},
            *history,
            {"role": "user", "content": text},
        ]
        model, tier = model_choice(flags, self.spec.tier, self._settings)
        self._prices.price_for(model)  # fail before spending anything if it has no price
        result = AgentResult(output="", model=model, price_table_version=self._prices.version)
        self.guardrails.audit = self.audit
        if self.screen_inputs:  # before any model call: a rejected input costs nothing
            self._screen_input(text, ctx, deadline, result, classifier=flags.classifier)
        if self.memory is not None:  # long-term memory: recall after the system prompt
            ctx = self.memory.prepare(ctx, text, deadline, result, messages)
        trusted = " ".join([text, *(str(m.get("content") or "") for m in history)])
        taint: set[str] = set()  # words only a withheld (injected) tool result contained
        iterations = self.spec.limits.max_iterations
        scope = ctx.scope
        tools = self.offered_tools(ctx.role, flags)
        for iteration in range(1, iterations + 1):
            last = iteration == iterations
            stream, redactor = self._streamed(on_event)
            reply = self._model.chat(
                model=model,
                messages=messages,
                max_output_tokens=self.spec.limits.max_output_tokens,
                tools=tools,
                # On the last allowed iteration the model must answer, not call tools.
                tool_choice="none" if (tools and last) else None,
                response_format=self.spec.output_schema,
                deadline=deadline,
                scope=scope,
                # Deterministic across retries of the same unit: the ledger key.
                step=f"{scope.step if scope else 'main'}:{iteration}",
                agent=self.spec.name,
                tier=tier,
                allow_downgrade=self.spec.allow_downgrade,
                cache_ttl_s=self.spec.response_cache_ttl_s,
                **stream,
            )
            if redactor is not None:  # the end of this call's text: what it held back
                redactor.close()
            self._account(result, reply)
            tool_calls = list(reply.message.tool_calls or [])
            if not tool_calls:
                result.output = self._output(reply)
                self._moderate(result, ctx, deadline)
                return result
            if last:
                break
            messages.append(_assistant_message(reply.message.content, tool_calls))
            for call in tool_calls:
                name, arguments = call.function.name, call.function.arguments
                if self.guardrails.tainted_call(name, arguments, ctx, taint):
                    content = _json(TAINTED_CALL)  # arguments an injection supplied: not run
                else:
                    result.tool_calls.append(ToolCallRecord.of(name, arguments))
                    tool_event(on_event, name, None)
                    content = self._run_tool(
                        name, arguments, ctx, taint=taint, trusted=trusted, flags=flags
                    )
                    tool_event(on_event, name, self.guardrails.redact(content))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        raise MaxIterationsExceeded(
            f"agent {self.spec.name} did not finish within {iterations} model calls",
            details={"max_iterations": iterations},
        )

    def _streamed(self, on_event: OnEvent | None) -> tuple[dict[str, Any], StreamRedactor | None]:
        """``on_delta`` for one model call of a streamed run (:mod:`stratus.stream_events`):
        with the ``redact`` output policy every delta goes through a redactor of its own,
        closed when the call ends."""
        if on_event is None:
            return {}, None
        emit = _delta_emitter(on_event)
        if self.spec.guardrails.output != "redact":
            return {"on_delta": emit}, None
        redactor = StreamRedactor(self.guardrails.redactor, emit)
        return {"on_delta": redactor.feed}, redactor

    def _screen_input(
        self,
        text: str,
        ctx: ToolContext,
        deadline: Deadline | None,
        result: AgentResult,
        *,
        classifier: bool | None = None,
    ) -> None:
        """Rules on the user's text, then (``classifier: fast`` unless the flag says other-
        wise, when the rules did not block) one fast-tier call joining the request's cost."""
        result.guardrail_flags = self.guardrails.screen_input(text, ctx)
        if not (self.spec.guardrails.classifier == "fast" if classifier is None else classifier):
            return
        category, reply = classify_input(self._model, text, **self._guard_call(ctx, deadline))
        self._account(result, reply, answered=False)
        flagged = self.guardrails.classified(category, ctx)
        result.guardrail_flags += [c for c in flagged if c not in result.guardrail_flags]

    def _moderate(self, result: AgentResult, ctx: ToolContext, deadline: Deadline | None) -> None:
        """``output_moderation``: one fast-tier call on the (redacted) reply."""
        if not self.spec.guardrails.output_moderation:
            return
        call = self._guard_call(ctx, deadline)
        unsafe, reply = moderate_output(self._model, result.output, **call)
        self._account(result, reply, answered=False)
        if unsafe:
            self.guardrails.output_blocked(ctx)
            raise OutputBlocked("the agent's reply was blocked by output moderation")

    def _guard_call(self, ctx: ToolContext, deadline: Deadline | None) -> dict[str, Any]:
        return {
            "model": self._settings.model_for("fast"),
            "deadline": deadline,
            "scope": ctx.scope,
            "agent": self.spec.name,
        }

    def _account(self, result: AgentResult, reply: ChatResult, *, answered: bool = True) -> None:
        """One model call's usage and cost join the request's; ``answered``: it was the
        agent's own call (a guardrail call does not change the model that answered)."""
        result.model_calls += 1
        if answered:
            result.model = reply.model  # the model that answered (a fallback, a cheaper tier)
            result.fallback_from.extend(
                m for m in reply.fallback_from if m not in result.fallback_from
            )
            result.downgraded = result.downgraded or reply.downgraded
        result.ledger_hits += int(reply.replayed)
        result.cache_hits += int(reply.cache_hit)
        result.usage = result.usage + reply.usage
        result.cost_usd += self._prices.cost(reply.model, reply.usage)
        result.fake_model = result.fake_model or reply.fake_model

    def _output(self, reply: ChatResult) -> str | dict[str, Any]:
        """The reply, PII redacted (``guardrails.output``) before it is returned, logged
        or stored; a structured one field by field, still valid against the schema."""
        return self.guardrails.filter_output(self._parsed_output(reply), self.spec.output_schema)

    def _parsed_output(self, reply: ChatResult) -> str | dict[str, Any]:
        if self.spec.output_schema is None:
            return reply.message.content or ""
        parsed = getattr(reply.message, "parsed", None)
        if parsed is None:
            # A refusal, or a server that ignored response_format.
            try:
                parsed = self.spec.output_schema.model_validate_json(reply.message.content or "")
            except PydanticValidationError as exc:
                raise ModelOutputInvalid(
                    "the model's answer does not match the agent's output schema",
                    details={"refusal": getattr(reply.message, "refusal", None)},
                ) from exc
        output: dict[str, Any] = parsed.model_dump(mode="json")
        return output

    def _run_tool(
        self,
        name: str,
        arguments: str,
        ctx: ToolContext,
        *,
        taint: set[str] | None = None,
        trusted: str = "",
        flags: AgentFlags | None = None,
    ) -> str:
        """Run one tool call; the model sees errors as results and may correct itself.
        A result that matches a ``block`` screening category is withheld (indirect
        injection), its words remembered in ``taint``; the run continues."""
        if flags is not None and self.spec.tool(name) is not None and not flags.offers(name):
            # Switched off by a flag for this segment: never run, even if the model asks.
            result = _json({"error": "tool_disabled", "message": f"the tool {name} is off"})
        else:
            result = self._execute_tool(name, arguments, ctx)
        return self.guardrails.screen_tool_result(
            name, result, ctx, taint if taint is not None else set(), trusted
        )

    def _execute_tool(self, name: str, arguments: str, ctx: ToolContext) -> str:
        tool: Tool | None = self.spec.tool(name)
        if tool is None:
            return _json({"error": "unknown_tool", "message": f"there is no tool named {name}"})
        if not tool.permits(ctx.role):
            self._audit(ctx, "tool.denied", tool=name, arguments=arguments, allowed=False)
            return _json(
                {
                    "error": TOOL_NOT_PERMITTED,
                    "message": f"the caller's role may not use the tool {name}",
                }
            )
        try:
            args = tool.args.model_validate_json(arguments or "{}")
        except PydanticValidationError as exc:
            return _json(
                {
                    "error": "invalid_arguments",
                    "details": exc.errors(include_url=False, include_input=False),
                }
            )
        started = time.monotonic()
        outcome = "ok"
        try:
            value = tool.fn(args, ctx)
            result = _json(value)[:TOOL_RESULT_MAX_CHARS]
        except StratusError:
            outcome = "error"
            raise  # configuration problems are the operator's, not the model's
        except Exception:
            outcome = "error"
            logger.exception("tool failed", extra={"tool": name, "agent": ctx.agent})
            result = _json({"error": "tool_failed", "message": f"{name} failed; try again later"})
        finally:
            self._audit(
                ctx,
                "tool.executed",
                tool=name,
                arguments=arguments,
                allowed=True,
                outcome=outcome,
                result_bytes=len(result.encode()) if outcome == "ok" else 0,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
            )
            size = len(result.encode()) if outcome == "ok" else 0
            tool_executed(name, ctx.agent, started, outcome, arguments, size)  # its log line
        return result

    def _audit(
        self, ctx: ToolContext, type: str, *, tool: str, arguments: str, **extra: Any
    ) -> None:
        """Buffer one tool event of the current request (the handler flushes it)."""
        if self.audit is None:
            return
        details = {
            "agent": self.spec.name,
            "tool": tool,
            "args_sha256": arguments_digest(arguments),
            "role": ctx.role,
            **extra,
        }
        self.audit.record(
            ctx.tenant_id,
            type,
            actor=ctx.key_id or "system",
            request_id=ctx.request_id or None,
            details=details,
        )


def arguments_digest(arguments: str | None) -> str:
    """SHA-256 of a tool call's canonical arguments (sorted keys, no spaces); arguments
    that are not JSON are hashed as sent. The audit trail keeps this, never the arguments."""
    try:
        canonical = json.dumps(
            json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except ValueError:
        canonical = arguments or ""
    return hashlib.sha256(canonical.encode()).hexdigest()


def _delta_emitter(on_event: OnEvent) -> Callable[[str], None]:
    def emit(text: str) -> None:
        if text:
            on_event({"type": "delta", "text": text})

    return emit


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _assistant_message(content: str | None, tool_calls: list[Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in tool_calls
        ],
    }

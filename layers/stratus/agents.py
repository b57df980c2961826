"""What an agent is: a spec, versioned prompt files and typed tools.

An agent package under ``functions/agents/<name>/`` exposes ``SPEC``. The spec
drives everything else: the runner reads its prompt, tools, schema and limits;
the CDK stack reads its memory, timeout, concurrency and the resources its
tools need, so adding an agent is adding one package.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stratus.aws import AwsClients
from stratus.config import ModelTier, Settings
from stratus.guardrails.policy import GuardrailPolicy
from stratus.memory.policy import MemoryPolicy

#: AWS resources an agent's tools may use; the stack grants exactly these.
Resource = Literal["orders_table"]

AGENT_NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
PROMPT_VERSION = re.compile(r"^v\d+(\.\d+)*$")


@dataclass(frozen=True)
class CallScope:
    """What a model call belongs to: the unit that is billed, budgeted and replayed.

    ``kind`` and ``scope_id`` name the unit (an HTTP request, a session turn, a
    job); ``step`` names the step within it (``main``, ``turn-12``, a workflow
    state). A retry of the same unit and step is the same scope.
    """

    tenant_id: str
    agent: str
    kind: Literal["request", "session", "job"]
    scope_id: str
    step: str = "main"
    #: Whether a retry of this unit can happen (job, session turn, Idempotency-Key):
    #: only then are completions kept in the call ledger for replay.
    replayable: bool = True
    #: A job's own cap (``max_cost_usd``): the limit of its per-task budget scope when
    #: lower than ``budget_task_usd``, reserved against before every step.
    max_cost_usd: Decimal | None = None


_TAG = "\x1e"


@dataclass(frozen=True)
class Principal:
    """Who a call runs for, as the authorizer resolved it: the key, its role (tool
    permissions) and the end customer the key is bound to (None: none of these)."""

    key_id: str | None = None
    role: str | None = None
    customer_id: str | None = None
    #: The tenant's tier (feature flags segment on it). Not part of :meth:`encode` nor of
    #: equality: idempotency scopes and stored jobs made before tiers stay the same.
    tier: str = field(default="standard", compare=False)

    def encode(self) -> str:
        """A stable string (an idempotency scope field, a job record attribute)."""
        return json.dumps([self.key_id, self.role, self.customer_id], separators=(",", ":"))

    @classmethod
    def decode(cls, value: Any) -> Principal:
        """:meth:`encode` undone; anything else (an old record without one) is nobody."""
        try:
            key_id, role, customer_id = json.loads(value) if isinstance(value, str) else value
        except (TypeError, ValueError):
            return cls()
        text = [str(v) if v not in (None, "") else None for v in (key_id, role, customer_id)]
        return cls(key_id=text[0], role=text[1], customer_id=text[2])

    def tag(self, request_id: str) -> str:
        """``request_id`` carrying this principal (a queued session message keeps it, so
        whichever request runs the turn runs it as its sender); unchanged for nobody."""
        return f"{request_id}{_TAG}{self.encode()}" if self != Principal() else request_id

    @classmethod
    def untag(cls, reference: str) -> tuple[str, Principal]:
        """:meth:`tag` undone: the request id and the principal."""
        request_id, _, encoded = reference.partition(_TAG)
        return request_id, cls.decode(encoded) if encoded else cls()

    def context(self) -> dict[str, str | None]:
        """The :class:`ToolContext` fields of this principal."""
        return {"key_id": self.key_id, "role": self.role, "customer_id": self.customer_id}


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the call it serves; never another tenant."""

    tenant_id: str
    agent: str
    request_id: str
    settings: Settings
    scope: CallScope | None = None
    #: The process's AWS clients (from the composition root), for tools that use AWS.
    clients: AwsClients | None = None
    #: The caller key's role (tool permissions) and the end customer it is bound to, if any.
    role: str | None = None
    customer_id: str | None = None
    #: The caller's key id (the actor of the audit events the call records), if known.
    key_id: str | None = None
    #: This run's long-term memory handle (``stratus.memory.agent.RunMemory``), set by the
    #: runner for an agent whose spec has ``memory``; the ``remember``/``recall`` tools use it.
    memory: Any = None


@dataclass(frozen=True)
class Tool:
    """A function the model may call, with its arguments typed by a pydantic model."""

    name: str
    description: str
    args: type[BaseModel]
    fn: Callable[[Any, ToolContext], Any]
    resources: frozenset[Resource] = field(default_factory=frozenset)
    #: The key roles that may use this tool; None: every role. A key without a role is
    #: the tenant's own principal and may use every tool (keys made before roles existed
    #: keep working); a key whose role is not listed is refused (``tool_not_permitted``).
    roles: frozenset[str] | None = None

    def permits(self, role: str | None) -> bool:
        """Whether a caller with ``role`` may use this tool."""
        return self.roles is None or role is None or role in self.roles


class Limits(BaseModel):
    """Per-call limits: what one invocation of the agent may consume."""

    model_config = ConfigDict(frozen=True)

    max_output_tokens: int = Field(default=1024, ge=16, le=128_000)
    max_iterations: int = Field(default=4, ge=1, le=32)
    max_input_chars: int = Field(default=32_000, ge=1)


class Deployment(BaseModel):
    """How the agent's own Lambda function is sized."""

    model_config = ConfigDict(frozen=True)

    memory_mb: int = Field(default=512, ge=128, le=10240)
    #: API Gateway REST integrations stop at 29 s; keep synchronous agents below.
    timeout_s: int = Field(default=28, ge=3, le=900)
    reserved_concurrency: int | None = Field(default=None, ge=1)


class SessionPolicy(BaseModel):
    """How an agent's multi-turn sessions behave (``AgentSpec.sessions``).

    ``policy`` decides what happens to a message that arrives while a turn is
    running: ``reject`` answers 409 ``session_busy``; ``enqueue`` waits in line
    (at most ``enqueue_wait_s``) and turns run in arrival order. Token numbers
    are the runtime's one estimate, an upper bound (:mod:`stratus.tokens`).
    """

    model_config = ConfigDict(frozen=True)

    policy: Literal["reject", "enqueue"] = "reject"
    #: Idle time after which a session expires (each turn extends it).
    ttl_s: int = Field(default=86_400, ge=1, le=30 * 86_400)
    #: Hard end of a session, counted from its creation; TTL removes every item then.
    max_age_s: int = Field(default=30 * 86_400, ge=60, le=365 * 86_400)
    #: Longest accepted message; longer ones get 413 ``message_too_large``.
    max_message_chars: int = Field(default=8_000, ge=1, le=32_000)
    #: Prompt budget for the system prompt, summary, recent turns and the new message.
    context_token_budget: int = Field(default=8_000, ge=256, le=1_000_000)
    #: Older turns are summarised once the unsummarised part exceeds this.
    summarize_after_tokens: int = Field(default=4_000, ge=64)
    #: At most this many unsummarised messages are read per turn (and then summarised).
    max_recent_messages: int = Field(default=40, ge=2, le=200)
    #: ``enqueue``: how long a message waits in line before it is withdrawn (409).
    enqueue_wait_s: float = Field(default=20.0, gt=0, le=900)
    #: Turn lock lease; by default the function timeout plus 5 s (a dead turn's lock expires).
    lock_lease_s: int | None = Field(default=None, ge=1, le=960)
    #: Output limit of the summarisation call (cheap tier).
    summary_max_tokens: int = Field(default=512, ge=64, le=8_192)

    @model_validator(mode="after")
    def _consistent(self) -> SessionPolicy:
        if self.summarize_after_tokens > self.context_token_budget:
            raise ValueError("summarize_after_tokens must not exceed context_token_budget")
        return self


class AgentSpec(BaseModel):
    """Everything that defines one version of an agent."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    version: str
    description: str
    tier: ModelTier
    prompt_version: str
    prompt_dir: Path
    tools: tuple[Tool, ...] = ()
    output_schema: type[BaseModel] | None = None
    limits: Limits = Limits()
    deployment: Deployment = Deployment()
    #: Multi-turn sessions (``/v1/agents/<name>/sessions``); None: the agent has none.
    sessions: SessionPolicy | None = None
    #: Past the budget downgrade threshold, may this agent move to a cheaper tier?
    allow_downgrade: bool = False
    #: Opt-in exact-match response cache (seconds to keep answers; None: off).
    #: Only for agents whose answers may be reused: same request, same answer.
    response_cache_ttl_s: int | None = Field(default=None, ge=60, le=30 * 24 * 3600)
    #: Jobs of this agent run as this Step Functions workflow (``infra/workflows/<name>.asl.json``)
    #: instead of one agent run; None runs the agent once per job.
    workflow: str | None = None
    #: Job routing: a value of the agent's output field ``category`` -> the agent that takes
    #: the job over (through that agent's own queue) when the job asks to be routed.
    routes: dict[str, str] = Field(default_factory=dict)
    #: Long-term memory (:mod:`stratus.memory`, S3 Vectors); None: the agent has none.
    memory: MemoryPolicy | None = None
    #: Input screening and output filtering (:mod:`stratus.guardrails`); the default
    #: flags every screening category and redacts PII from the output.
    guardrails: GuardrailPolicy = GuardrailPolicy()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not AGENT_NAME.match(value):
            raise ValueError("agent names are lower_snake_case, 2-40 characters")
        return value

    @field_validator("prompt_version")
    @classmethod
    def _prompt_version(cls, value: str) -> str:
        if not PROMPT_VERSION.match(value):
            raise ValueError("prompt versions look like v1 or v2.1")
        return value

    @model_validator(mode="after")
    def _prompt_exists(self) -> AgentSpec:
        if not self.prompt_path.is_file():
            raise ValueError(f"prompt file {self.prompt_path} does not exist")
        names = [tool.name for tool in self.tools]
        if len(names) != len(set(names)):
            raise ValueError("tool names must be unique within an agent")
        if self.sessions is not None and (
            self.sessions.max_message_chars > self.limits.max_input_chars
        ):
            raise ValueError("sessions.max_message_chars must not exceed limits.max_input_chars")
        return self

    @property
    def session_lock_lease_s(self) -> int:
        """How long a turn may hold a session's lock before another may take it."""
        if self.sessions is not None and self.sessions.lock_lease_s is not None:
            return self.sessions.lock_lease_s
        return self.deployment.timeout_s + 5

    @property
    def prompt_path(self) -> Path:
        return self.prompt_dir / f"{self.prompt_version}.md"

    @cached_property
    def system_prompt(self) -> str:
        return self.prompt_path.read_text(encoding="utf-8").strip()

    @property
    def resources(self) -> frozenset[Resource]:
        needed: frozenset[Resource] = frozenset()
        for tool in self.tools:
            needed |= tool.resources
        return needed

    def tool(self, name: str) -> Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def tools_for(self, role: str | None) -> tuple[Tool, ...]:
        """The tools a caller with ``role`` may use (what the model is offered)."""
        return tuple(tool for tool in self.tools if tool.permits(role))

"""The ``remember`` and ``recall`` tools of an agent with memory.

Their arguments say only what to remember or look for: the tenant and end customer
come from the call's :class:`~stratus.agents.ToolContext` (the authenticated caller),
never from arguments, so a model asked to recall "another customer's" memories can only
ever search its caller's. ``ToolContext.memory`` is set by the runner's memory hook;
without it the tools answer ``memory_unavailable``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratus.agents import Tool, ToolContext
from stratus.memory.policy import MemoryPolicy


class RememberArgs(BaseModel):
    """Something about the customer worth keeping across conversations."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1, max_length=1_000, description="One short fact, e.g. a preference."
    )


class RecallArgs(BaseModel):
    """What to look for in the customer's long-term memory."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=1_000, description="What to look for.")
    limit: int = Field(default=5, ge=1, le=20)


def _memory(ctx: ToolContext) -> Any:
    return getattr(ctx, "memory", None)


def remember(args: RememberArgs, ctx: ToolContext) -> dict[str, Any]:
    memory = _memory(ctx)
    if memory is None:
        return {"error": "memory_unavailable"}
    session = ctx.scope.scope_id if ctx.scope and ctx.scope.kind == "session" else None
    ids, embedded = memory.service.remember(
        memory.owner(ctx),
        [args.text],
        kind="remembered",
        agent=ctx.agent,
        scope=ctx.scope,
        step=memory.step(ctx, ":remember"),
        session_id=session,
        max_chars=memory.policy.max_memory_chars,
    )
    memory.spent(embedded)
    return {"remembered": bool(ids), "id": ids[0] if ids else None}


def recall(args: RecallArgs, ctx: ToolContext) -> dict[str, Any]:
    memory = _memory(ctx)
    if memory is None:
        return {"error": "memory_unavailable"}
    found = memory.service.search(
        memory.owner(ctx),
        args.query,
        limit=args.limit,
        min_score=memory.policy.min_score,
        scope=ctx.scope,
        step=memory.step(ctx, ":recall-tool"),
        agent=ctx.agent,
    )
    memory.spent(found.embedding)
    return {
        "memories": [
            {"text": m.text, "kind": m.kind, "score": round(m.score or 0, 4)}
            for m in found.memories
        ]
    }


REMEMBER = Tool(
    name="remember",
    description="Remember a durable fact about the current customer (a preference, a standing "
    "request) for later conversations.",
    args=RememberArgs,
    fn=remember,
)
RECALL = Tool(
    name="recall",
    description="Search what is remembered about the current customer.",
    args=RecallArgs,
    fn=recall,
)


def memory_tools(policy: MemoryPolicy) -> tuple[Tool, ...]:
    """The tools ``policy`` asks for (put them in the spec's ``tools``)."""
    wanted = ((policy.remember_tool, REMEMBER), (policy.recall_tool, RECALL))
    return tuple(tool for on, tool in wanted if on)

"""Tool permissions in the runner: what the model is offered per role, a refused call is
never executed, and both outcomes land in the audit trail (no AWS, no HTTP)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from stratus.agents import AgentSpec, Principal, Tool, ToolContext
from stratus.audit import AuditTrail, MemoryAuditStore
from stratus.config import Settings
from stratus.llm import ChatResult
from stratus.prices import load_price_table
from stratus.runner import AgentRunner, arguments_digest
from stratus.usage import Usage

PROMPTS = Path(__file__).parents[2] / "functions" / "agents" / "order_status" / "prompts"


class Args(BaseModel):
    order_id: str


class ScriptedModel:
    """Asks for ``lookup_order`` whatever it is offered, then answers; records the offers."""

    def __init__(self) -> None:
        self.offered: list[list[str]] = []
        self.tool_messages: list[dict[str, Any]] = []

    def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_output_tokens: int,
        tools: list[Any] = [],  # noqa: B006 - never mutated
        **_: Any,
    ) -> ChatResult:
        self.offered.append([t["function"]["name"] for t in tools])
        self.tool_messages = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
        if len(self.offered) == 1:
            call = SimpleNamespace(
                id="call_1",
                function=SimpleNamespace(name="lookup_order", arguments='{"order_id": "A-1"}'),
            )
            message = SimpleNamespace(content=None, tool_calls=[call])
        else:
            message = SimpleNamespace(content="done", tool_calls=None)
        return ChatResult(
            message=message,
            model="gpt-5-mini",
            response_model="gpt-5-mini",
            usage=Usage(input_tokens=10, output_tokens=2),
            finish_reason="stop",
            attempts=1,
            latency_ms=1.0,
            fake_model=True,
        )


@pytest.fixture
def world() -> SimpleNamespace:
    ran: list[str] = []

    def lookup(args: Args, ctx: ToolContext) -> dict[str, Any]:
        ran.append(args.order_id)
        return {"found": True, "order_id": args.order_id}

    spec = AgentSpec(
        name="perm_test",
        version="1.0.0",
        description="test",
        tier="fast",
        prompt_version="v1",
        prompt_dir=PROMPTS,
        tools=(
            Tool("lookup_order", "look up", Args, lookup, roles=frozenset({"support"})),
            Tool("echo", "echo", Args, lambda a, c: {"echo": a.order_id}),
        ),
    )
    settings = Settings()
    model = ScriptedModel()
    runner = AgentRunner(spec, model, load_price_table(None), settings)
    store = MemoryAuditStore()
    runner.audit = AuditTrail(store, clock=lambda: 1_800_000_000.0)
    return SimpleNamespace(runner=runner, model=model, ran=ran, store=store, settings=settings)


def run(world: SimpleNamespace, principal: Principal) -> None:
    ctx = ToolContext(
        tenant_id="t1",
        agent="perm_test",
        request_id="req-1",
        settings=world.settings,
        key_id=principal.key_id,
        role=principal.role,
        customer_id=principal.customer_id,
    )
    world.runner.run("where is A-1?", ctx=ctx)
    world.runner.audit.flush()


def test_a_role_without_the_tool_never_runs_it_and_the_denial_is_audited(
    world: SimpleNamespace,
) -> None:
    run(world, Principal(key_id="key_v", role="viewer"))
    assert world.model.offered[0] == ["echo"]  # never offered
    assert world.ran == []  # asked anyway: never executed
    assert world.model.tool_messages == [
        {
            "error": "tool_not_permitted",
            "message": "the caller's role may not use the tool lookup_order",
        }
    ]
    (denied,) = world.store.events("t1")[0]
    assert denied.type == "tool.denied" and denied.actor == "key_v"
    assert denied.details["allowed"] is False and denied.details["role"] == "viewer"
    assert denied.details["args_sha256"] == arguments_digest('{"order_id":"A-1"}')


@pytest.mark.parametrize("role", ["support", None])
def test_a_permitted_role_and_a_key_without_a_role_run_it(
    world: SimpleNamespace, role: str | None
) -> None:
    run(world, Principal(key_id="key_s", role=role))
    assert world.model.offered[0] == ["lookup_order", "echo"]
    assert world.ran == ["A-1"]
    (executed,) = world.store.events("t1")[0]
    assert executed.type == "tool.executed" and executed.details["allowed"] is True
    assert executed.details["result_bytes"] == len(b'{"found": true, "order_id": "A-1"}')


def test_the_argument_digest_is_canonical() -> None:
    assert arguments_digest('{"b": 1, "a": "x"}') == arguments_digest('{"a":"x","b":1}')
    assert arguments_digest("not json") != arguments_digest("{}")


def test_a_principal_survives_its_encodings() -> None:
    who = Principal(key_id="key_1", role="customer", customer_id="cust-9")
    assert Principal.decode(who.encode()) == who
    assert Principal.untag(who.tag("req-1")) == ("req-1", who)
    assert Principal().tag("req-1") == "req-1" and Principal.untag("req-1") == (
        "req-1",
        Principal(),
    )
    assert Principal.decode(None) == Principal() and Principal.decode("garbage") == Principal()

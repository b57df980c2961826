"""Adding an agent is adding a package: the stack grows one function and its routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from functions.agents import load_all
from infra.config import load_stage
from infra.stack import StratusStack
from infra.topology import api_routes
from stratus.agents import AgentSpec, Deployment, Tool, ToolContext
from tests.infra.conftest import synth_context

pytestmark = pytest.mark.infra


class _Args(BaseModel):
    order_id: str


def _lookup(args: _Args, ctx: ToolContext) -> dict[str, Any]:
    return {}


def _refunds(prompt_dir: Path) -> AgentSpec:
    (prompt_dir / "v1.md").write_text("You decide refunds.", encoding="utf-8")
    return AgentSpec(
        name="refunds",
        version="0.1.0",
        description="Test agent added without touching infra.",
        tier="smart",
        prompt_version="v1",
        prompt_dir=prompt_dir,
        tools=(
            Tool(
                name="lookup_order",
                description="Look up an order.",
                args=_Args,
                fn=_lookup,
                resources=frozenset({"orders_table"}),
            ),
        ),
        deployment=Deployment(memory_mb=1024, timeout_s=15, reserved_concurrency=5),
    )


def test_new_agent_gets_a_function_and_routes(tmp_path: Path) -> None:
    from aws_cdk import App
    from aws_cdk.assertions import Match, Template

    agents = {**load_all(), "refunds": _refunds(tmp_path)}
    app = App(context=synth_context(), outdir=str(tmp_path / "cdk.out"))
    stack = StratusStack(app, "Stratus-test", stage=load_stage("dev"), agents=agents)
    template = Template.from_stack(stack)

    # An API function and a worker per agent; platform, authorizer, ingest, sweeper,
    # callbacks; the two release hooks; the stream router and its $connect authorizer.
    template.resource_count_is("AWS::Lambda::Function", 2 * len(agents) + 9)
    # every queue and its DLQ (ingest, callbacks, one per agent), and the sweep's DLQ
    template.resource_count_is("AWS::SQS::Queue", 2 * (len(agents) + 2) + 1)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "MemorySize": 1024,
            "Timeout": 15,
            "ReservedConcurrentExecutions": 5,
            "Environment": {
                "Variables": Match.object_like(
                    {"STRATUS_AGENT": "refunds", "STRATUS_ORDERS_TABLE": Match.any_value()}
                )
            },
        },
    )
    template.has_resource_properties("AWS::ApiGateway::Resource", {"PathPart": "refunds"})
    template.resource_count_is("AWS::ApiGateway::Method", len(api_routes(agents)))
    assert "refunds" in stack.functions.agents
    assert ("POST", "/v1/agents/refunds/invoke") in stack.api.methods
    assert ("ANY", "/v1/agents/refunds/{proxy+}") in stack.api.methods

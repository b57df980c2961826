"""The streaming plans (``infra.topology.streaming``): who gets which table, variable and
route; the same plans drive the CDK stack and the local cloud (pure data, no synth)."""

from __future__ import annotations

import json

import pytest

from functions.agents import load_all
from infra.config import load_stage
from infra.definitions import TABLES
from infra.topology import FunctionPlan, function_plans
from infra.topology.streaming import (
    STREAM_AUTHORIZER_HANDLER,
    STREAM_FUNCTIONS_ENV,
    STREAM_HANDLER,
    WS_CALLBACK_ENV,
    StreamResources,
    stream_environment,
)

NAMES = {t.name: f"tbl-{t.name}" for t in TABLES}


def _plans() -> dict[str, FunctionPlan]:
    return {plan.key: plan for plan in function_plans(load_stage("dev"), load_all())}


def test_router_and_authorizer_plans() -> None:
    plans = _plans()
    router, authorizer = plans["stream"], plans["stream_authorizer"]
    assert router.handler == STREAM_HANDLER and authorizer.handler == STREAM_AUTHORIZER_HANDLER
    assert router.tables == {"streams": "read_write", "audit": "write"}
    assert authorizer.tables == {"tenants": "read", "streams": "write", "audit": "write"}
    assert {WS_CALLBACK_ENV, STREAM_FUNCTIONS_ENV} <= set(router.env_names)
    assert WS_CALLBACK_ENV not in authorizer.env_names
    assert not router.model_secret and not authorizer.model_secret
    assert plans["platform"].tables["streams"] == "write"  # tickets


def test_agent_api_functions_stream_and_workers_do_not() -> None:
    plans = _plans()
    for name in load_all():
        agent, worker = plans[f"agent:{name}"], plans[f"worker:{name}"]
        assert agent.tables["streams"] == "write"
        assert WS_CALLBACK_ENV in agent.env_names
        assert STREAM_FUNCTIONS_ENV not in agent.env_names
        assert "streams" not in worker.tables
        assert WS_CALLBACK_ENV not in worker.env_names


def test_stream_environment_is_filled_from_the_resources() -> None:
    plans = _plans()
    agents = {a: f"arn:fn:{a}:live" for a in load_all()}
    stream = StreamResources(callback_url="https://x.execute-api/dev", functions=agents)
    router = plans["stream"].environment(table_names=NAMES, stream=stream)
    assert router[WS_CALLBACK_ENV] == "https://x.execute-api/dev"
    assert json.loads(router[STREAM_FUNCTIONS_ENV]) == agents
    assert set(router) == set(plans["stream"].env_names)
    agent = plans["agent:support"].environment(
        table_names=NAMES, model_secret_id="arn:s", stream=stream
    )
    assert agent[WS_CALLBACK_ENV] == "https://x.execute-api/dev"
    assert set(agent) == set(plans["agent:support"].env_names)
    # Without resources (CDK, before the WebSocket API exists) they are left to the construct.
    bare = plans["stream"].environment(table_names=NAMES)
    assert WS_CALLBACK_ENV not in bare
    with pytest.raises(KeyError, match="triage"):
        stream_environment(
            "router", ("triage",), StreamResources(callback_url="u", functions={"support": "f"})
        )
    assert stream_environment(None, (), stream) == {}

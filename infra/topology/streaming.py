"""Streaming over WebSockets (issue 17): the router and ``$connect`` authorizer plans, the
WebSocket routes, and the streaming environment of the functions.

One router function (``stream``) serves every route of the WebSocket API; the
``$connect`` route runs the REQUEST authorizer ``stream_authorizer`` (no identity
sources: it takes an ``Authorization`` header or ``?ticket=``). The router invokes each
agent's own function asynchronously (``STRATUS_STREAM_FUNCTIONS``), which posts the frames
itself through the management API (``STRATUS_WS_CALLBACK_URL``).

The streaming variables name resources the plans cannot know (the WebSocket API's
endpoint, the agent functions' ARNs): :meth:`FunctionPlan.environment` fills them from
a :class:`StreamResources` (the local cloud passes its own), and CDK sets them on the
functions once the WebSocket API exists (``infra.constructs.websocket``), through
:func:`stream_environment` too, so both give the same names. This module does not
import ``infra.topology.functions`` (that one includes these plans): the plan class is
passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from infra.config import StageConfig
from infra.definitions import AUDIT, STREAMS, TENANTS
from infra.topology.common import AUDIT_TABLES, POWERTOOLS_ENV, TableAccess, audit_env
from stratus.agents import AgentSpec

STREAM_HANDLER = "functions.handlers.stream.lambda_handler"
STREAM_AUTHORIZER_HANDLER = "functions.handlers.stream_authorizer.lambda_handler"
#: The management API endpoint (``endpoint_url`` of boto3's ``apigatewaymanagementapi``).
WS_CALLBACK_ENV = "STRATUS_WS_CALLBACK_URL"
#: Router only: JSON ``{agent: function name or ARN (its live alias)}``.
STREAM_FUNCTIONS_ENV = "STRATUS_STREAM_FUNCTIONS"
#: Route selection of the WebSocket API, and its routes (all on the router).
ROUTE_SELECTION_EXPRESSION = "$request.body.action"
CONNECT_ROUTE = "$connect"
DISCONNECT_ROUTE = "$disconnect"
DEFAULT_ROUTE = "$default"
WEBSOCKET_ROUTES: tuple[str, ...] = (
    CONNECT_ROUTE,
    DISCONNECT_ROUTE,
    DEFAULT_ROUTE,
    "invoke",
    "message",
)
#: Frames over this are answered ``payload_too_large`` by the router (API Gateway's frame
#: size); messages over ``MAX_MESSAGE_BYTES`` API Gateway refuses itself.
MAX_FRAME_BYTES = 32 * 1024
MAX_MESSAGE_BYTES = 128 * 1024
#: The plan keys.
STREAM_KEY = "stream"
STREAM_AUTHORIZER_KEY = "stream_authorizer"

#: What a plan needs of the streaming setup: the router (endpoint + agent functions) or an
#: agent's API function (endpoint only).
StreamRole = Literal["router", "agent"]
P = TypeVar("P")


@dataclass(frozen=True)
class StreamResources:
    """The streaming values known only once the WebSocket API and functions exist."""

    callback_url: str
    #: Agent -> function name or ARN (its ``live`` alias) the router invokes.
    functions: Mapping[str, str]
    to_json: Callable[[Any], str] = json.dumps


def stream_env_names(role: StreamRole | None) -> tuple[str, ...]:
    """The streaming variables a plan of this role gets."""
    if role is None:
        return ()
    if role == "router":
        return (STREAM_FUNCTIONS_ENV, WS_CALLBACK_ENV)
    return (WS_CALLBACK_ENV,)


def stream_environment(
    role: StreamRole | None, agents: tuple[str, ...], resources: StreamResources
) -> dict[str, str]:
    """The streaming variables of a plan of this role (``agents``: the router's targets)."""
    if role is None:
        return {}
    env = {WS_CALLBACK_ENV: resources.callback_url}
    if role == "router":
        missing = sorted(set(agents) - set(resources.functions))
        if missing:
            raise KeyError(f"{STREAM_KEY}: no function given for agents {missing}")
        env[STREAM_FUNCTIONS_ENV] = resources.to_json({a: resources.functions[a] for a in agents})
    return env


#: What an agent's API function gets to stream: item writes of its FRAME# records.
AGENT_STREAM_TABLES: Mapping[str, TableAccess] = {STREAMS.name: "write"}


def stream_plan(stage: StageConfig, specs: Mapping[str, AgentSpec], plan: Callable[..., P]) -> P:
    """The router: validates frames, claims client ids, invokes the agents' functions."""
    env = {"STRATUS_STAGE": stage.name, "STRATUS_AGENT": "", **POWERTOOLS_ENV}
    env.update(audit_env(stage))
    return plan(
        key=STREAM_KEY,
        kind="platform",  # invoked synchronously by API Gateway only
        construct_id="StreamRouter",
        handler=STREAM_HANDLER,
        description="Stratus WebSocket stream router: frames to the agents' functions",
        memory_mb=512,
        # It only validates, writes one claim and starts the agent's function (async).
        timeout_s=10,
        reserved_concurrency=None,
        static_env=env,
        # CONN#, FRAME# (claims, finished frames) items; refusals go to the audit trail.
        tables={STREAMS.name: "read_write", **AUDIT_TABLES},
        stream="router",
        stream_agents=tuple(sorted(specs)),
    )


def stream_authorizer_plan(stage: StageConfig, plan: Callable[..., P]) -> P:
    """The ``$connect`` authorizer: a tenant key (as the REST one) or a single-use ticket."""
    env = {"STRATUS_STAGE": stage.name, **POWERTOOLS_ENV, **audit_env(stage)}
    tables: dict[str, TableAccess] = {
        TENANTS.name: "read",
        # Tickets are consumed by one conditional delete (single use).
        STREAMS.name: "write",
        AUDIT.name: "write",
    }
    return plan(
        key=STREAM_AUTHORIZER_KEY,
        kind="authorizer",
        construct_id="StreamAuthorizer",
        handler=STREAM_AUTHORIZER_HANDLER,
        description="Stratus WebSocket $connect authorizer: API key or ticket to tenant",
        memory_mb=512,
        timeout_s=10,
        reserved_concurrency=None,
        static_env=env,
        tables=tables,
    )


def streaming_plans(
    stage: StageConfig, specs: Mapping[str, AgentSpec], plan: Callable[..., P]
) -> list[P]:
    """The router and the authorizer of the WebSocket API."""
    return [stream_plan(stage, specs, plan), stream_authorizer_plan(stage, plan)]


def websocket_url(api_id: str, region: str, stage: str, suffix: str = "amazonaws.com") -> str:
    """The ``wss://`` URL clients connect to (deployed)."""
    return f"wss://{api_id}.execute-api.{region}.{suffix}/{stage}"

"""The WebSocket stream router (issue 17): ``$connect``, ``$disconnect``, ``$default``,
``invoke`` and ``message`` of the WebSocket API, all in this one function.

Thin: the API Gateway WebSocket event goes to ``stratus.streaming.StreamRouter``
(``composition.current().stream_router``), which records connections, answers a bad
frame with an ``error`` frame (the connection stays open), claims the client id and
invokes the agent's own function asynchronously; the answer is ``{"statusCode": 200}``.
A ``message`` to an agent without sessions is ``not_streamable`` (the spec says so).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus import composition
from stratus.observability import logger


def has_sessions(agent: str) -> bool | None:
    """Whether ``agent`` has sessions (None: its spec cannot be loaded here)."""
    from functions.agents import load_agent

    try:
        return load_agent(agent).sessions is not None
    except Exception:  # the agent function answers for itself
        return None


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    runtime = composition.current()
    try:
        status = runtime.stream_router.handle(event, has_sessions=has_sessions)
    finally:
        runtime.audit.flush()  # a refused scope is audited (one write; none otherwise)
    return {"statusCode": status}

"""One log line (and, with OTLP on, one ``execute_tool`` span) per executed tool call.

The runner calls :func:`tool_executed` for every tool it runs, on every path (sync
invoke, session turn, job, workflow step, streamed): ``tool``, ``agent``,
``duration_ms``, ``outcome`` (``ok`` | ``error``), ``args_bytes`` and ``result_bytes``
(UTF-8 sizes). Never the arguments or the result: they may hold user data. The line
carries the request's correlation id like every other (Powertools).
"""

from __future__ import annotations

import time

from stratus import otel
from stratus.observability import logger


def tool_executed(
    tool: str, agent: str, started: float, outcome: str, arguments: str, result_bytes: int
) -> None:
    """Log one executed tool call (``started``: ``time.monotonic()`` before it ran)."""
    duration_ms = round((time.monotonic() - started) * 1000, 3)
    logger.info(
        "tool call",
        extra={
            "tool": tool,
            "agent": agent,
            "duration_ms": duration_ms,
            "outcome": outcome,
            "args_bytes": len((arguments or "").encode()),
            "result_bytes": result_bytes,
        },
    )
    otel.tool_call(tool=tool, agent=agent, duration_ms=duration_ms, outcome=outcome)

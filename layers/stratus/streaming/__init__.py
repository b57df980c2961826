"""WebSocket streaming (issue 17): frames, the streams table, the router, the execution.

See :mod:`stratus.streaming.frames` (the protocol), :mod:`stratus.streaming.store` (the
streams table's items), :mod:`stratus.streaming.router` (the stream router function),
:mod:`stratus.streaming.execution` (the agent function's streamed run) and
:mod:`stratus.streaming.tickets` (connect tickets).
"""

from stratus.streaming.execution import FrameSink, StreamedExecution, StreamRequest
from stratus.streaming.frames import MAX_FRAME_BYTES, error_frame, parse_frame
from stratus.streaming.ports import (
    AgentInvoker,
    ConnectionGone,
    ConnectionPoster,
    MemoryInvoker,
    MemoryPoster,
)
from stratus.streaming.router import StreamRouter
from stratus.streaming.store import Claim, MemoryStreamStore, StreamCaller, StreamStore, frame_key
from stratus.streaming.tickets import StreamTickets

__all__ = [
    "MAX_FRAME_BYTES",
    "AgentInvoker",
    "Claim",
    "ConnectionGone",
    "ConnectionPoster",
    "FrameSink",
    "MemoryInvoker",
    "MemoryPoster",
    "MemoryStreamStore",
    "StreamCaller",
    "StreamRequest",
    "StreamRouter",
    "StreamStore",
    "StreamTickets",
    "StreamedExecution",
    "error_frame",
    "frame_key",
    "parse_frame",
]

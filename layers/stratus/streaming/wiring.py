"""How :class:`stratus.composition.Runtime` builds the streaming members (issue 17).

Kept here so the composition root stays one line per member; ``runtime`` is the
process's ``Runtime`` (typed loosely: this module must not import the composition).
"""

from __future__ import annotations

from typing import Any

from stratus.errors import ConfigurationError
from stratus.streaming.ports import ConnectionPoster
from stratus.streaming.router import StreamRouter
from stratus.streaming.store import StreamStore


def stream_store(runtime: Any) -> StreamStore:
    from stratus.streaming.dynamo import DynamoStreamStore

    name = runtime.settings.streams_table
    if not name:
        raise ConfigurationError("STRATUS_STREAMS_TABLE is not set for this function")
    return DynamoStreamStore(runtime.clients.table(name))


def stream_poster(runtime: Any) -> ConnectionPoster:
    from stratus.streaming.aws_adapters import ManagementApiPoster

    return ManagementApiPoster(runtime.clients, runtime.settings.ws_callback_url)


def stream_router(runtime: Any) -> StreamRouter:
    from stratus.streaming.aws_adapters import LambdaAgentInvoker

    return StreamRouter(
        runtime.streams,
        runtime.stream_poster,
        LambdaAgentInvoker(runtime.clients),
        functions=runtime.settings.stream_functions,
        audit=runtime.audit,
        clock=runtime.clock,
    )

"""Model calls and tool calls as OpenTelemetry spans (GenAI semantic conventions), over OTLP.

Off by default: with ``STRATUS_OTLP_ENDPOINT`` unset nothing here imports
``opentelemetry`` and every function returns at once. Set (a stage's ``otlp`` in
``cdk.json``; any OTLP/HTTP backend: Langfuse, LangSmith, an OpenTelemetry Collector),
the first span builds one ``TracerProvider`` per process with a batch processor and the
OTLP/HTTP protobuf exporter (``<endpoint>/v1/traces`` unless the endpoint names its path).
``STRATUS_OTLP_HEADERS_SECRET`` names a Secrets Manager secret whose JSON object holds the
exporter's headers (an API key: never in the environment).

Spans:

* ``chat {model}`` (kind CLIENT) per model call, from the gateway's post-call bookkeeping:
  ``gen_ai.operation.name`` = ``chat``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
  ``gen_ai.agent.name``, ``stratus.cost_usd``, ``stratus.release``, ``correlation_id`` (and
  ``stratus.cached_input_tokens``, ``stratus.reasoning_tokens``, ``stratus.ledger_hit``,
  ``stratus.cache_hit``, ``stratus.attempts``);
* ``execute_tool {name}`` (kind INTERNAL) per executed tool call, from the runner:
  ``gen_ai.operation.name`` = ``execute_tool``, ``gen_ai.tool.name``, ``gen_ai.agent.name``,
  ``stratus.outcome``, ``stratus.release``, ``correlation_id``. Never arguments or results.

Spans are recorded after the fact (start = end - duration), so nothing wraps the calls.
:func:`flush` (the handlers call it at the end of every invocation) force-flushes with a
short timeout. Nothing here ever raises into a request: failures are logged once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from stratus import correlation
from stratus.observability import logger

ENDPOINT_ENV = "STRATUS_OTLP_ENDPOINT"
HEADERS_SECRET_ENV = "STRATUS_OTLP_HEADERS_SECRET"  # noqa: S105 - a variable name
#: The longest :func:`flush` waits for the exporter (ms): a slow backend never holds a request.
FLUSH_TIMEOUT_MS = 1000
#: The exporter's own HTTP timeout (s).
EXPORT_TIMEOUT_S = 2.0
PROVIDER_NAME = "openai"

_lock = threading.Lock()
_state: dict[str, Any] = {}


def enabled() -> bool:
    """Whether spans are exported (``STRATUS_OTLP_ENDPOINT`` is set)."""
    return bool(os.environ.get(ENDPOINT_ENV, "").strip())


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of ``endpoint`` (``/v1/traces`` appended to a bare base)."""
    endpoint = endpoint.strip()
    if endpoint.rstrip("/").endswith("/v1/traces"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def _headers() -> dict[str, str]:
    name = os.environ.get(HEADERS_SECRET_ENV, "").strip()
    if not name:
        return {}
    from stratus.aws import AwsClients

    raw = AwsClients().client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"the OTLP headers secret {name!r} is not a JSON object")
    return {str(k): str(v) for k, v in value.items()}


def _tracer() -> Any:
    """The process's tracer (built once); None if it cannot be built (logged once)."""
    if "tracer" in _state:
        return _state["tracer"]
    with _lock:
        if "tracer" in _state:
            return _state["tracer"]
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            exporter = OTLPSpanExporter(
                endpoint=traces_url(os.environ[ENDPOINT_ENV]),
                headers=_headers(),
                timeout=EXPORT_TIMEOUT_S,
            )
            resource = Resource.create(
                {
                    "service.name": os.environ.get("POWERTOOLS_SERVICE_NAME", "stratus"),
                    "deployment.environment": os.environ.get("STRATUS_STAGE", ""),
                    "faas.name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
                }
            )
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(exporter))
            _state["provider"] = provider
            _state["tracer"] = provider.get_tracer("stratus")
        except Exception as exc:
            logger.warning("OpenTelemetry export is off: setup failed", extra={"error": repr(exc)})
            _state["tracer"] = None
        return _state["tracer"]


def prime() -> None:
    """Build the exporter at init when export is on (an agent function's init hook), so the
    first request does not pay for it; nothing when off."""
    if enabled():
        _tracer()


def _common(agent: str | None) -> dict[str, Any]:
    keys = logger.get_current_keys()
    attributes: dict[str, Any] = {"gen_ai.agent.name": agent or str(keys.get("agent") or "")}
    release = keys.get("release")
    if release:
        attributes["stratus.release"] = str(release)
    cid = correlation.current() or logger.get_correlation_id()
    if cid:
        attributes["correlation_id"] = str(cid)
    return attributes


def _record(name: str, kind: str, duration_ms: float, attributes: Mapping[str, Any]) -> None:
    tracer = _tracer()
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind

    end = time.time_ns()
    start = end - int(max(0.0, duration_ms) * 1_000_000)
    span = tracer.start_span(
        name, kind=getattr(SpanKind, kind), start_time=start, attributes=dict(attributes)
    )
    span.end(end_time=end)


def model_call(
    *,
    model: str,
    response_model: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    latency_ms: float,
    agent: str | None = None,
    cached_input_tokens: int = 0,
    reasoning_tokens: int = 0,
    attempts: int = 1,
    ledger_hit: bool = False,
    cache_hit: bool = False,
    operation: str = "chat",
) -> None:
    """One ``chat {model}`` span (``embeddings {model}`` for an embeddings call; no-op when
    export is off; never raises)."""
    if not enabled():
        return
    try:
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER_NAME,
            "gen_ai.system": PROVIDER_NAME,
            "gen_ai.request.model": model,
            "gen_ai.response.model": response_model or model,
            "gen_ai.usage.input_tokens": int(input_tokens),
            "gen_ai.usage.output_tokens": int(output_tokens),
            "stratus.cached_input_tokens": int(cached_input_tokens),
            "stratus.reasoning_tokens": int(reasoning_tokens),
            "stratus.cost_usd": float(cost_usd),
            "stratus.attempts": int(attempts),
            "stratus.ledger_hit": bool(ledger_hit),
            "stratus.cache_hit": bool(cache_hit),
            **_common(agent),
        }
        _record(f"{operation} {model}", "CLIENT", latency_ms, attributes)
    except Exception as exc:
        logger.warning("recording a model span failed", extra={"error": repr(exc)})


def tool_call(*, tool: str, agent: str | None, duration_ms: float, outcome: str) -> None:
    """One ``execute_tool {name}`` span (no-op when export is off; never raises)."""
    if not enabled():
        return
    try:
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "stratus.outcome": outcome,
            **_common(agent),
        }
        _record(f"execute_tool {tool}", "INTERNAL", duration_ms, attributes)
    except Exception as exc:
        logger.warning("recording a tool span failed", extra={"error": repr(exc)})


def flush(timeout_ms: int = FLUSH_TIMEOUT_MS) -> bool:
    """Export what this invocation recorded, waiting at most ``timeout_ms``; True when
    nothing is pending (or export is off). Never raises."""
    provider = _state.get("provider")
    if provider is None:
        return True
    try:
        return bool(provider.force_flush(timeout_millis=timeout_ms))
    except Exception as exc:
        logger.warning("flushing spans failed", extra={"error": repr(exc)})
        return False


def reset() -> None:
    """Forget the provider (tests: another endpoint); shuts the old one down."""
    with _lock:
        provider = _state.pop("provider", None)
        _state.pop("tracer", None)
    if provider is not None:
        try:
            provider.shutdown()
        except Exception:
            logger.debug("shutting the span provider down failed")

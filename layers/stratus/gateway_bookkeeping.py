"""The gateway's bookkeeping around a model call: waves of writes, metrics, the log line.

A wave (:func:`write_all`) is a list of labelled, independent writes run together
(:func:`stratus.fanout.run_all`: one round trip); each failure is logged with its
label and never raised (the answer is paid for; bookkeeping never loses it).

:func:`deferred` lets ``ModelGateway.chat`` return before its post-call wave is
written: the wave runs on the process's wave pool (:class:`Wave`, no thread of
its own to start on the hot path), registered in a
ContextVar, and leaving the outermost ``deferred()`` waits for every wave it
holds. :func:`post` writes a wave now, or defers it inside such a context. On
Lambda, with the settle-after-response extension on (:mod:`stratus.after_response`),
the outermost ``deferred()`` hands its waves to the extension instead: they are
written after the response, before the environment takes its next request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from stratus import after_response, otel
from stratus.fanout import Started, run_all
from stratus.observability import NAMESPACE, SERVICE, logger

if TYPE_CHECKING:
    from stratus.llm import ChatResult

#: A labelled write of a post-call (or hit-path) wave.
Write = tuple[str, Callable[[], Any]]


class Wave:
    """A post-call wave running in the background (inside :func:`deferred`).

    ``lazy``: it starts when the ``deferred()`` context it belongs to ends (or when a
    later call waits for it), not at once: the answer it follows is built without its
    requests' client-side work competing for the interpreter."""

    def __init__(self, writes: Sequence[Write], *, lazy: bool = False) -> None:
        self._writes = list(writes)
        self._started: Started[None] | None = None
        if not lazy:
            self.start()

    def _run(self) -> None:
        write_all(self._writes)  # logs each failure, raises none

    def start(self) -> Started[None]:
        if self._started is None:
            self._started = Started(self._run)
        return self._started

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every write of the wave; False if ``timeout`` passed first."""
        try:
            self.start().wait(timeout)
        except TimeoutError:
            return False
        return True


_pending: ContextVar[list[Wave] | None] = ContextVar("stratus_gateway_pending", default=None)


def write_all(writes: Sequence[Write]) -> None:
    """One wave of bookkeeping writes; a failure is logged, never raised."""
    outcomes = run_all([fn for _, fn in writes])
    for (label, _), outcome in zip(writes, outcomes, strict=True):
        if outcome.error is not None:
            logger.error(
                "gateway bookkeeping write failed",
                extra={"write": label, "error": repr(outcome.error)},
                exc_info=outcome.error,
            )


def drain() -> None:
    """Wait for the waves this context started so far."""
    waves = _pending.get()
    while waves:
        waves.pop(0).wait()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside: ``chat`` starts its post-call wave and returns without waiting for it;
    leaving waits for every pending wave (failures are logged). Nested: the outermost
    waits. Use it where the caller has its own write to overlap (Powertools' idempotency
    record): the answer is returned only after everything was written, or, inside
    ``after_response.invocation`` on Lambda, handed to the extension that writes it
    before the environment takes its next request."""
    if _pending.get() is not None:
        try:
            yield
        finally:
            _start_pending()  # e.g. the idempotent invoke's: overlapping the record's save
        return
    token = _pending.set([])
    try:
        yield
    finally:
        try:
            waves = _start_pending()
            # On Lambda with the extension on, the waves are written after the response.
            if not after_response.hand_over(waves):
                drain()
        finally:
            _pending.reset(token)


def _start_pending() -> list[Wave]:
    """Start this context's lazy waves; every pending wave."""
    waves = _pending.get() or []
    for wave in waves:
        wave.start()
    return waves


def post(writes: Sequence[Write], *, last: bool = False) -> None:
    """Write the wave now, or (inside :func:`deferred`) start it and return.

    ``last``: the call's answer is final (no tool call follows it). When the wave will be
    written after the response (:mod:`stratus.after_response`), it then starts only when
    the ``deferred()`` context ends: nothing else would overlap it before that, and the
    answer is built without competing with it. Otherwise it starts at once, to overlap the
    caller's next steps (tools, a commit, the job's writes)."""
    waves = _pending.get()
    if waves is None:
        write_all(writes)
    else:
        # Waited for when the deferred() context ends, or written after the response.
        waves.append(Wave(writes, lazy=last and after_response.collecting()))


def observe(
    result: ChatResult,
    cost: Decimal,
    log: dict[str, Any],
    started: float,
    *,
    ledger_hit: bool = False,
    cache_hit: bool = False,
    saved: Decimal = Decimal(0),
) -> None:
    latency_ms = (time.perf_counter() - started) * 1000.0
    usage = result.usage
    log = dict(log)  # as it is now: emitted later on Lambda

    def emit() -> None:
        metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        metrics.add_dimension(name="agent", value=str(log.get("agent") or "-"))
        metrics.add_dimension(name="model", value=result.model)
        if ledger_hit:
            metrics.add_metric(name="LedgerHits", unit=MetricUnit.Count, value=1)
        elif cache_hit:
            metrics.add_metric(name="CacheHits", unit=MetricUnit.Count, value=1)
            metrics.add_metric(
                name="CacheSavedMicroUSD", unit=MetricUnit.Count, value=float(saved * 10**6)
            )
        else:
            metrics.add_metric(name="ModelCalls", unit=MetricUnit.Count, value=1)
            metrics.add_metric(
                name="ModelInputTokens", unit=MetricUnit.Count, value=usage.input_tokens
            )
            metrics.add_metric(
                name="ModelCachedInputTokens",
                unit=MetricUnit.Count,
                value=usage.cached_input_tokens,
            )
            metrics.add_metric(
                name="ModelOutputTokens", unit=MetricUnit.Count, value=usage.output_tokens
            )
            metrics.add_metric(
                name="ModelReasoningTokens", unit=MetricUnit.Count, value=usage.reasoning_tokens
            )
            metrics.add_metric(
                name="ModelCostMicroUSD", unit=MetricUnit.Count, value=float(cost * 10**6)
            )
            metrics.add_metric(name="ModelLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
            if result.fallback_from:
                metrics.add_metric(name="ModelFallbacks", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
        logger.info(
            "model call",
            extra={
                **log,
                "model": result.model,
                "usage": usage.model_dump(),
                "cost_usd": str(cost),
                "latency_ms": round(latency_ms, 1),
                "attempts": result.attempts,
                "ledger_hit": ledger_hit,
                "cache_hit": cache_hit,
                "saved_usd": str(saved),
                "fallback_from": list(result.fallback_from),
                "downgraded": result.downgraded,
            },
        )

    # The metrics and the log line: after the answer on Lambda (stratus.after_response).
    after_response.later(emit)
    otel.model_call(  # the GenAI span, when OTLP export is on (stratus.otel); else no-op
        operation="chat" if hasattr(result, "message") else "embeddings",
        model=result.model,
        response_model=getattr(result, "response_model", result.model),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=float(cost),
        latency_ms=latency_ms,
        agent=str(log.get("agent") or ""),
        cached_input_tokens=usage.cached_input_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        attempts=result.attempts,
        ledger_hit=ledger_hit,
        cache_hit=cache_hit,
    )

"""The operator metrics of every execution model: one call when a task ends.

A *task* is a synchronous invoke (``kind="sync"``), a session turn (``"session"``), a
job (``"job"``) or one step of a supervised workflow (``"workflow_step"``). Each path
calls :func:`task_ended` (or :func:`job_ended` with the finished job record) once, and
this module writes the EMF documents (namespace ``Stratus``) the dashboard and the
operator alarms read (``infra/constructs/dashboard.py``, ``operator_alarms.py``):

* dimensions ``agent`` + ``service`` (the per-agent view, and the cost alarm's metric):
  ``Requests``, ``Successes``, ``Errors`` (a failure of the agent: a 5xx or anything
  unexpected; a refusal of the caller's request, a 4xx, is a request that did not
  succeed but not an error of the agent), ``LatencyMs``, ``CostMicroUSD`` (the task's
  cost), ``InputTokens``, ``OutputTokens``, ``CachedTokens``, ``ReasoningTokens``,
  ``LedgerHits``, ``CacheHits``, ``Fallbacks`` (models that failed before the one that
  answered);
* dimensions ``agent`` + ``service`` + ``kind`` (four values): ``Requests``,
  ``Successes``, ``Errors``, ``LatencyMs``, ``CostMicroUSD``;
* dimensions ``agent`` + ``service`` + ``ErrorCode`` (the stable error codes), on every
  failure (refusals included): ``Errors`` = 1.

A workflow step is billed and counted under its ``kind`` only: its job, when it ends,
counts as the request (``Requests``/``Successes``/``Errors``/``LatencyMs``) and its cost
is not billed again. A task whose every model call was replayed from the call ledger
(a retry) bills nothing: it was paid once already. Never ``tenant`` as a dimension.

Besides tasks: :func:`approval_awaited` (``WorkflowsWaitingApproval``: a workflow
started waiting for a human approval, dimensions ``agent`` + ``service``),
:func:`breaker_opened` (``BreakerOpens``, dimensions ``service``, and
``service`` + ``model``) and :func:`budget_burn` (``BudgetBurnPct``: the share of a
budget spent after a settlement, dimensions ``service`` + ``scope`` for ``global_day``,
``service`` + ``scope`` + ``agent`` for ``agent_day``). The release gate's ``Tasks`` /
``TaskErrors`` stay in :mod:`stratus.release_tags`. A metric never fails what it
describes: every emission swallows (and logs) its own failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, Literal

from stratus import after_response
from stratus.observability import NAMESPACE, SERVICE, logger

Kind = Literal["sync", "session", "job", "workflow_step"]
KINDS: tuple[str, ...] = ("sync", "session", "job", "workflow_step")

#: Budget scopes whose burn is a metric (the others are per tenant or per task).
BURN_SCOPES = ("global_day", "agent_day")

#: The metric names, for the dashboard, the alarms and the tests.
REQUESTS = "Requests"
SUCCESSES = "Successes"
ERRORS = "Errors"
LATENCY = "LatencyMs"
COST = "CostMicroUSD"
INPUT_TOKENS = "InputTokens"
OUTPUT_TOKENS = "OutputTokens"
CACHED_TOKENS = "CachedTokens"
REASONING_TOKENS = "ReasoningTokens"
LEDGER_HITS = "LedgerHits"
CACHE_HITS = "CacheHits"
FALLBACKS = "Fallbacks"
BREAKER_OPENS = "BreakerOpens"
BUDGET_BURN = "BudgetBurnPct"
WAITING_APPROVAL = "WorkflowsWaitingApproval"

#: Set inside :func:`muted` (init-phase priming).
_muted: ContextVar[bool] = ContextVar("stratus_task_metrics_muted", default=False)


def task_clock() -> float:
    """A start mark for :func:`task_ended` (monotonic seconds)."""
    return time.monotonic()


def error_code(exc: BaseException) -> str:
    """The stable code of a failure (``internal_error`` for anything unexpected)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else "internal_error"


def is_agent_error(exc: BaseException) -> bool:
    """A failure of the agent (5xx or unexpected), not a refusal of the caller's request."""
    status = getattr(exc, "status", None)
    return not isinstance(status, int) or status >= 500


def task_ended(
    agent: str,
    kind: Kind,
    *,
    result: Any = None,
    error: BaseException | None = None,
    started: float | None = None,
    latency_ms: float | None = None,
    cost_usd: Decimal | None = None,
    usage: Any = None,
) -> None:
    """Emit one finished task's metrics.

    ``result`` is what the runner answered (an ``AgentResult`` or a job step: its
    ``usage``, ``cost_usd`` and, when it has them, ``ledger_hits``, ``cache_hits``,
    ``model_calls`` and ``fallback_from``); ``usage`` / ``cost_usd`` override its totals
    (a session turn also pays for its summary). ``error``: the task failed with it.
    ``started`` (:func:`task_clock`) or ``latency_ms`` give the latency.
    """
    if latency_ms is None and started is not None:
        latency_ms = (time.monotonic() - started) * 1000
    usage = usage if usage is not None else getattr(result, "usage", None)
    if cost_usd is None and result is not None:
        cost_usd = getattr(result, "cost_usd", None)
    ledger_hits = int(getattr(result, "ledger_hits", 0) or 0)
    calls = int(getattr(result, "model_calls", 0) or 0)
    if calls and ledger_hits >= calls:
        cost_usd = Decimal(0)  # every call replayed: paid once already
    emit = partial(
        _emit,
        agent,
        kind,
        failed=error is not None,
        agent_error=error is not None and is_agent_error(error),
        code=error_code(error) if error is not None else None,
        latency_ms=latency_ms,
        cost_usd=cost_usd if error is None or cost_usd else None,
        usage=usage,
        hits={}
        if result is None
        else {
            LEDGER_HITS: ledger_hits,
            CACHE_HITS: int(getattr(result, "cache_hits", 0) or 0),
            FALLBACKS: len(getattr(result, "fallback_from", None) or ()),
        },
        counted=kind != "workflow_step",
        billed=True,
    )
    after_response.later(emit)  # after the answer on Lambda (stratus.after_response)


def job_ended(job: Mapping[str, Any], status: str, *, task_error: bool = True) -> None:
    """Emit a finished job's metrics from its record (the winner of the final transition).

    Latency is from ``created_at`` to ``updated_at`` (queue time included: what the
    client waited); a workflow job's cost was billed by its steps.
    """
    try:
        error = job.get("error") if isinstance(job.get("error"), Mapping) else {}
        code = str((error or {}).get("code") or "") or None
        if status == "cancelled":
            code = code or "job_cancelled"
        failed = status != "succeeded"
        workflow = bool(job.get("execution_arn"))
        usage = {
            INPUT_TOKENS: int(job.get("input_tokens", 0) or 0),
            OUTPUT_TOKENS: int(job.get("output_tokens", 0) or 0),
            CACHED_TOKENS: int(job.get("cached_input_tokens", 0) or 0),
            REASONING_TOKENS: int(job.get("reasoning_tokens", 0) or 0),
        }
        _emit(
            str(job.get("agent") or "-"),
            "job",
            failed=failed,
            agent_error=status == "failed" and task_error,
            code=code if failed else None,
            latency_ms=_elapsed_ms(job.get("created_at"), job.get("updated_at")),
            cost_usd=None if workflow else Decimal(str(job.get("cost_usd", 0) or 0)),
            usage=None if workflow else usage,
            hits={},
            counted=True,
            billed=not workflow,
        )
    except Exception:  # a metric never fails the job it describes
        logger.exception("emitting the job metrics failed")


def _elapsed_ms(start: Any, end: Any) -> float | None:
    try:
        delta = datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))
    except (TypeError, ValueError):
        return None
    return max(delta.total_seconds() * 1000, 0.0)


def _tokens(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    # A usage object before the Mapping check: an ABC check of a class it has not seen
    # walks every registered Mapping (most of a millisecond, on a function's first call).
    if not isinstance(usage, dict) and hasattr(usage, "input_tokens"):
        return {
            INPUT_TOKENS: usage.input_tokens,
            OUTPUT_TOKENS: usage.output_tokens,
            CACHED_TOKENS: usage.cached_input_tokens,
            REASONING_TOKENS: usage.reasoning_tokens,
        }
    if isinstance(usage, Mapping):
        return {name: int(value) for name, value in usage.items()}
    raise TypeError(f"not a usage: {type(usage).__name__}")


def _emit(
    agent: str,
    kind: str,
    *,
    failed: bool,
    agent_error: bool,
    code: str | None,
    latency_ms: float | None,
    cost_usd: Decimal | None,
    usage: Any,
    hits: Mapping[str, int],
    counted: bool,
    billed: bool,
) -> None:
    try:
        outcome = {REQUESTS: 1, SUCCESSES: 0 if failed else 1, ERRORS: 1 if agent_error else 0}
        cost = float(cost_usd * 10**6) if billed and cost_usd is not None else None
        per_agent: dict[str, float] = dict(outcome) if counted else {}
        if counted and latency_ms is not None:
            per_agent[LATENCY] = latency_ms
        if cost is not None:
            per_agent[COST] = cost
        if billed:
            per_agent.update(_tokens(usage))
            per_agent.update(hits)
        by_kind: dict[str, float] = dict(outcome)
        if latency_ms is not None:
            by_kind[LATENCY] = latency_ms
        if cost is not None:
            by_kind[COST] = cost
        dims = {"agent": agent or "-"}
        if per_agent:
            _document(dims, per_agent)
        _document({**dims, "kind": kind}, by_kind)
        if code is not None:
            _document({**dims, "ErrorCode": code}, {ERRORS: 1})
    except Exception:  # a metric never fails the task it describes
        logger.exception("emitting the task metrics failed")


def approval_awaited(agent: str) -> None:
    """A workflow started waiting for a human approval (``WorkflowsWaitingApproval``)."""
    try:
        _document({"agent": agent or "-"}, {WAITING_APPROVAL: 1})
    except Exception:
        logger.exception("emitting the approval metric failed")


def breaker_opened(model: str) -> None:
    """A circuit breaker opened (or re-opened after a failed probe) for ``model``."""
    try:
        _document({}, {BREAKER_OPENS: 1})
        _document({"model": model or "-"}, {BREAKER_OPENS: 1})
    except Exception:
        logger.exception("emitting the breaker metric failed")


def budget_burn(scope: str, spent: Decimal, limit: Decimal, agent: str) -> None:
    """The share (percent) of a ``global_day`` / ``agent_day`` budget spent so far."""
    if scope not in BURN_SCOPES or limit <= 0:
        return
    try:
        dims = {"scope": scope} if scope == "global_day" else {"scope": scope, "agent": agent}
        _document(dims, {BUDGET_BURN: float(spent * 100 / limit)})
    except Exception:
        logger.exception("emitting the budget burn metric failed")


@contextmanager
def muted() -> Iterator[None]:
    """No metric document inside (in this context and what it hands to
    :func:`stratus.after_response.later`): the init phase's priming request is not
    traffic, and its deliberate rejection must not count as a request or an error."""
    token = _muted.set(True)
    try:
        yield
    finally:
        _muted.reset(token)


def _document(dimensions: Mapping[str, str], values: Mapping[str, float]) -> None:
    """One EMF document (``service`` is always a dimension), flushed now."""
    if _muted.get():
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    emf = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    for key, dim in dimensions.items():
        emf.add_dimension(name=key, value=dim)
    for name, value in values.items():
        unit = MetricUnit.Milliseconds if name == LATENCY else MetricUnit.Count
        if name == BUDGET_BURN:
            unit = MetricUnit.Percent
        emf.add_metric(name=name, unit=unit, value=value)
    emf.flush_metrics()

"""The model gateway: every model call of the runtime goes through here.

Per call, in order:

1. **Call ledger**: the same step of the same billable unit with the same
   request (a retry) gets the stored completion; the provider is not called.
2. **Response cache** (agents that opt in): an exact-match answer, counted
   with the cost it saved.
3. **Model choice**: the tier's model and its fallback chain; past the budget
   downgrade threshold, the cheaper tier's chain if the agent allows it.
4. **Budget reservation** of the worst case on every scope (``stratus.budgets``),
   held until the deadline plus a margin; refused with ``429 budget_exceeded`` and
   the reset time (``402 job_budget_exceeded`` at a job's own ``max_cost_usd``).
5. **Key choice**: the least-loaded key under fleet-wide RPM/TPM buckets.
6. **Circuit breaker** per (endpoint, model), shared by the fleet.
7. **The call** (``ModelClient``, one attempt at a time). This is the runtime's
   one retry loop: exponential backoff with full jitter, or the provider's
   ``Retry-After``; another key on a key's 429; the next model when one keeps
   failing; never past the deadline.
8. **Settlement** of the budget to the real cost, the ledger entry, usage
   rollups, metrics (dimensions agent and model) and one log line per call.

The stores are passed in, built by :mod:`stratus.composition`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from pydantic import BaseModel

from stratus.agents import CallScope
from stratus.breaker import Admission, CircuitBreaker
from stratus.budgets import BudgetLedger, Reservation
from stratus.config import ModelTier, Settings
from stratus.deadline import Deadline, NoDeadline
from stratus.errors import (
    ConfigurationError,
    DeadlineExceeded,
    ModelAuthFailed,
    ModelProviderError,
    ModelRateLimited,
    ModelUnavailable,
    StratusError,
)
from stratus.ledger import CompletionStore, cache_key, call_key, request_hash
from stratus.llm import MAX_RETRY_AFTER_S, MIN_CALL_S, ChatResult, ModelClient, retry_hint
from stratus.observability import NAMESPACE, SERVICE, logger
from stratus.prices import PriceTable
from stratus.ratelimit import KeyBuckets, KeyLease
from stratus.rollups import UsageRollups
from stratus.tokens import estimate_prompt_tokens
from stratus.usage import Usage

#: Cool-down of a key that got a 429 without Retry-After.
DEFAULT_KEY_COOLDOWN_S = 10.0


class _NextModel(Exception):
    """This model is done for this call (breaker open, attempts used up)."""


class ModelGateway:
    """Budgets, ledger, cache, keys, breaker and fallbacks around a ``ModelClient``."""

    def __init__(
        self,
        client: ModelClient,
        settings: Settings,
        prices: PriceTable,
        *,
        budgets: BudgetLedger,
        ledger: CompletionStore,
        buckets: KeyBuckets,
        breaker: CircuitBreaker,
        rollups: UsageRollups,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self._settings = settings
        self._prices = prices
        self._sleep = sleep
        self._jitter = jitter
        self.budgets = budgets
        self.ledger = ledger
        self.buckets = buckets
        self.breaker = breaker
        self.rollups = rollups

    def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_output_tokens: int,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
        response_format: type[BaseModel] | None = None,
        deadline: Deadline | None = None,
        scope: CallScope | None = None,
        step: str = "main",
        agent: str = "",
        tier: ModelTier | None = None,
        allow_downgrade: bool = False,
        cache_ttl_s: int | None = None,
    ) -> ChatResult:
        started = time.perf_counter()
        agent = agent or (scope.agent if scope else "")
        schema = response_format.model_json_schema() if response_format is not None else None
        digest = request_hash(
            {
                "messages": messages,
                "tools": list(tools),
                "tool_choice": tool_choice,
                "response_format": schema,
                "max_output_tokens": max_output_tokens,
                "model": tier or model,
            }
        )
        log: dict[str, Any] = {
            "tenant_id": scope.tenant_id if scope else None,
            "agent": agent,
            "scope": f"{scope.kind}:{scope.scope_id}" if scope else None,
            "step": step,
        }

        # 1. The call ledger: a retried step is replayed, never paid twice.
        ledger_pk = call_key(scope, step, digest) if scope and scope.replayable else None
        if ledger_pk and self.ledger.enabled:
            stored = self.ledger.get(ledger_pk)
            if stored is not None:
                result, cost = stored
                result = replace(result, replayed=True)
                self._observe(result, cost, log, started, ledger_hit=True)
                self._record_unpaid(scope, agent, result.model, ledger_hit=True)
                return result

        # 2. The opt-in response cache.
        cache_pk = cache_key(scope, agent, digest) if cache_ttl_s else None
        if cache_pk and self.ledger.enabled:
            stored = self.ledger.get(cache_pk)
            if stored is not None:
                cached, saved = stored
                result = replace(cached, usage=Usage(), cache_hit=True, attempts=0)
                self._observe(result, Decimal(0), log, started, cache_hit=True, saved=saved)
                self._record_unpaid(scope, agent, result.model, cache_hit=True, saved=saved)
                return result

        # 3. The models: the tier's chain (the downgrade chain is decided after reserving).
        chain = self._chain(model, tier)
        cheaper = self._priced(self._settings.downgrade_chain(tier)) if tier else ()
        prompt_bound = estimate_prompt_tokens(messages, tools, schema)
        worst = self.worst_case((*chain, *cheaper), prompt_bound, max_output_tokens)

        # 4. Reserve the worst case on every budget scope (raises budget_exceeded), held
        # until the deadline plus a margin: given back then if this process dies.
        reservation = self.budgets.reserve(scope, agent, worst, deadline=deadline)
        downgraded = False
        if (
            allow_downgrade
            and cheaper
            and reservation.utilisation >= self._settings.budget_downgrade_at
        ):
            chain, downgraded = cheaper, True
            logger.info(
                "budget threshold passed: using the cheaper tier",
                extra={**log, "utilisation_percent": round(reservation.utilisation, 1)},
            )
        try:
            result = self._call_chain(
                chain,
                messages=messages,
                max_output_tokens=max_output_tokens,
                tools=tools,
                tool_choice=tool_choice,
                response_format=response_format,
                deadline=deadline or NoDeadline(),
                tokens=prompt_bound + max_output_tokens,
                log=log,
            )
        except BaseException:
            self.budgets.release(reservation)
            raise
        result = replace(result, downgraded=downgraded)
        cost = self._prices.cost(result.model, result.usage)
        self._settle(reservation, cost, scope, agent)

        if ledger_pk:
            self.ledger.put(ledger_pk, result, cost)
        if cache_pk:
            self.ledger.put(cache_pk, result, cost, ttl_s=cache_ttl_s)
        self.rollups.record(
            scope=scope, agent=agent, model=result.model, usage=result.usage, cost=cost
        )
        self._observe(result, cost, log, started)
        return result

    def worst_case(
        self, models: Sequence[str], prompt_tokens: int, max_output_tokens: int
    ) -> Decimal:
        """The reservation: the dearest model of the chain, all input uncached, all output."""
        worst = Usage(input_tokens=prompt_tokens, output_tokens=max_output_tokens)
        return max(self._prices.cost(m, worst) for m in models)

    # -- models

    def _priced(self, models: Sequence[str]) -> tuple[str, ...]:
        usable = []
        for name in models:
            try:
                self._prices.price_for(name)
            except ConfigurationError:
                logger.warning("fallback model has no price; skipped", extra={"model": name})
                continue
            usable.append(name)
        return tuple(usable)

    def _chain(self, model: str, tier: ModelTier | None) -> tuple[str, ...]:
        self._prices.price_for(model)  # the primary must have a price: fail before spending
        if tier is None:
            return (model,)
        fallbacks = [m for m in self._settings.model_chain(tier)[1:] if m != model]
        return (model, *self._priced(fallbacks))

    def _call_chain(
        self,
        chain: Sequence[str],
        *,
        deadline: Deadline,
        tokens: int,
        log: dict[str, Any],
        **request: Any,
    ) -> ChatResult:
        failures: list[dict[str, str]] = []
        last: StratusError | None = None
        endpoint = self.client.endpoint
        for model in chain:
            admission = self.breaker.before(endpoint, model)
            if not admission.allowed:
                failures.append({"model": model, "error": f"circuit_{admission.state}"})
                continue
            try:
                result = self._call_model(
                    model, admission, deadline=deadline, tokens=tokens, log=log, **request
                )
            except DeadlineExceeded:
                if last is None:
                    raise
                break  # no time left for a fallback: report what failed
            except _NextModel as exc:
                cause = exc.__cause__
                assert isinstance(cause, StratusError)
                last = cause
                failures.append({"model": model, "error": cause.code})
                continue
            if failures:
                result = replace(result, fallback_from=tuple(f["model"] for f in failures))
                logger.warning(
                    "model fallback answered", extra={**log, "model": model, "failed": failures}
                )
            return result
        if last is not None and len(failures) == 1:
            raise last
        details = {"attempts": failures}
        if failures and all(f["error"] == ModelRateLimited.code for f in failures):
            assert last is not None
            raise ModelRateLimited(
                "every model of the chain is rate limiting requests",
                details=details,
                headers=last.headers,
            )
        raise ModelUnavailable(
            "no model of the chain could answer: "
            + ", ".join(f"{f['model']} ({f['error']})" for f in failures),
            details=details,
        )

    def _call_model(
        self,
        model: str,
        admission: Admission,
        *,
        deadline: Deadline,
        tokens: int,
        log: dict[str, Any],
        **request: Any,
    ) -> ChatResult:
        endpoint = self.client.endpoint
        keys = self.client.keys.keys()
        attempts = self._settings.model_max_attempts
        for attempt in range(1, attempts + 1):
            lease: KeyLease = self.buckets.acquire(keys, tokens)
            try:
                result = self.client.complete(
                    model=model, api_key=lease.api_key, deadline=deadline, **request
                )
            except (ModelRateLimited, ModelAuthFailed) as exc:
                wait = self._wait(exc, attempt)
                if len(keys) > 1:
                    # A key-level problem: cool this key down fleet-wide, use another at once.
                    cool = retry_hint(exc).after_s or DEFAULT_KEY_COOLDOWN_S
                    if isinstance(exc, ModelAuthFailed):
                        cool = 300.0
                    self.buckets.cool_down(lease, cool)
                    logger.warning(
                        "model key refused, moving to another key",
                        extra={**log, "model": model, "error": exc.code, "key": lease.key_id},
                    )
                    if attempt == attempts:
                        if isinstance(exc, ModelAuthFailed):
                            raise
                        raise _NextModel() from exc  # this model's attempts are used up
                    continue
                if isinstance(exc, ModelAuthFailed):
                    raise
                self._pause(exc, wait, attempt, attempts, deadline, model, log)
                continue
            except (ModelUnavailable, ModelProviderError) as exc:
                opened = self.breaker.failure(endpoint, model, admission)
                if opened or admission.probe:
                    raise _NextModel() from exc
                self._pause(exc, self._wait(exc, attempt), attempt, attempts, deadline, model, log)
                continue
            self.breaker.success(endpoint, model, admission)
            self.buckets.settle(lease, result.usage.input_tokens + result.usage.output_tokens)
            return replace(result, attempts=attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, exc: StratusError, attempt: int) -> float | None:
        """Before retrying after ``attempt``: the provider's ``Retry-After``, else full
        jitter, uniform in [0, min(cap, base * 2**(attempt - 1))]; None: do not retry."""
        hint = retry_hint(exc)
        if not hint.retryable:
            return None
        if hint.after_s is not None:
            return hint.after_s
        s = self._settings
        return self._jitter() * min(
            s.model_backoff_cap_s, s.model_backoff_base_s * 2 ** (attempt - 1)
        )

    def _pause(
        self,
        exc: StratusError,
        wait: float | None,
        attempt: int,
        attempts: int,
        deadline: Deadline,
        model: str,
        log: dict[str, Any],
    ) -> None:
        """Wait before the next attempt, or give up on this model."""
        if wait is None or attempt >= attempts:
            raise _NextModel() from exc
        pause = min(wait, MAX_RETRY_AFTER_S)
        if pause + MIN_CALL_S > deadline.remaining_s() - self._settings.deadline_margin_s:
            if isinstance(exc, DeadlineExceeded):
                raise exc
            raise _NextModel() from exc
        logger.warning(
            "model call failed, retrying",
            extra={
                **log,
                "model": model,
                "attempt": attempt,
                "error": exc.code,
                "retry_in_s": round(pause, 3),
            },
        )
        self._sleep(pause)

    # -- settlement and observability

    def _record_unpaid(self, scope: CallScope | None, agent: str, model: str, **hit: Any) -> None:
        """Roll up an answer the provider did not serve (a replay or a cache hit)."""
        self.rollups.record(
            scope=scope, agent=agent, model=model, usage=Usage(), cost=Decimal(0), **hit
        )

    def _settle(
        self, reservation: Reservation, cost: Decimal, scope: CallScope | None, agent: str
    ) -> None:
        try:
            self.budgets.settle(reservation, cost, scope=scope, agent=agent)
        except Exception:  # the answer is paid for; never lose it over bookkeeping
            logger.exception("budget settlement failed")

    def _observe(
        self,
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

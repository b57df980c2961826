"""The model gateway: every model call of the runtime goes through here.

Per call:

1. **The pre-call wave** (one DynamoDB round trip: its requests run together,
   :func:`stratus.fanout.run_all`): the **call ledger** lookup (the same step of the
   same billable unit with the same request, a retry, gets the stored completion;
   the provider is not called), the opt-in **response cache** lookup, the **budget
   reservation** of the worst case on every scope (``stratus.budgets``; refused with
   ``429 budget_exceeded`` and the reset time, ``402 job_budget_exceeded`` at a
   job's own ``max_cost_usd``), the **key-bucket take** on the least-loaded key
   (fleet-wide RPM/TPM), and the circuit breaker's item when this process has no
   copy of it yet. A ledger or cache answer wins over everything else: its
   reservation is released and its bucket take given back (the hit path costs one
   more wave). A budget refusal wins over a rate-limited key (the take is given
   back); a refused take tries the other keys (the refusal path).
2. **Model choice**: the tier's model and its fallback chain; past the budget
   downgrade threshold, the cheaper tier's chain if the agent allows it.
3. **Circuit breaker** per (endpoint, model), shared by the fleet, read from a
   per-process copy at most ``gateway_state_cache_s`` old (see
   :mod:`stratus.breaker` for what that staleness lets through).
4. **The call** (``ModelClient``, one attempt at a time). This is the runtime's
   one retry loop: exponential backoff with full jitter, or the provider's
   ``Retry-After``; another key on a key's 429; the next model when one keeps
   failing; never past the deadline. Retries take a key bucket each (one write).
5. **The post-call wave** (one round trip): the budget settlement to the real cost
   (which also adds the usage counters to the day and month items), the ledger
   entry, the cache entry, the unused tokens back to the key's bucket, the usage
   rollup of the unit, and the breaker's reset when there were failures. A failed
   bookkeeping write is logged and never fails the paid call. Then metrics
   (dimensions agent and model) and one log line per call.

Inside :func:`deferred` (the idempotent invoke uses it) the post-call wave runs in
the background and ``chat`` returns at once; leaving the context waits for every
pending wave, and a later ``chat`` in the same context waits for the earlier waves
first (so a unit's next reservation sees its last settlement). Outside it, when
``chat`` returns everything is written.

The stores are passed in, built by :mod:`stratus.composition`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

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
from stratus.fanout import Outcome, run_all
from stratus.gateway_bookkeeping import Write, deferred, drain, observe, post, write_all
from stratus.gateway_stream import broken_stream_writes
from stratus.ledger import CompletionStore, cache_key, call_key, json_schema, request_hash
from stratus.llm import MAX_RETRY_AFTER_S, MIN_CALL_S, ChatResult, ModelClient, retry_hint
from stratus.llm_stream import StreamBroken, replay_text
from stratus.observability import logger
from stratus.prices import PriceTable
from stratus.ratelimit import KeyBuckets, KeyLease
from stratus.rollups import UsageRollups
from stratus.tokens import estimate_prompt_tokens
from stratus.usage import Usage

#: Cool-down of a key that got a 429 without Retry-After.
DEFAULT_KEY_COOLDOWN_S = 10.0


class _NextModel(Exception):
    """This model is done for this call (breaker open, attempts used up)."""


@dataclass
class _Attempt:
    """One call's key lease from the pre-call wave and what answered it."""

    lease: KeyLease | None
    used: KeyLease | None = None
    admission: Admission | None = None
    model: str = ""

    def take_lease(self) -> KeyLease | None:
        lease, self.lease = self.lease, None
        return lease


class ModelGateway:
    """Budgets, ledger, cache, keys, breaker and fallbacks around a ``ModelClient``."""

    #: See :func:`deferred` (one ContextVar for every gateway of the process).
    deferred = staticmethod(deferred)

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
        on_delta: Callable[[str], None] | None = None,
    ) -> ChatResult:
        drain()  # this unit's earlier settlements first: they free its budget room
        started = time.perf_counter()
        agent = agent or (scope.agent if scope else "")
        schema = json_schema(response_format) if response_format is not None else None
        replayable = scope is not None and scope.replayable
        # The request's digest keys the ledger and the cache: not computed without them.
        digest = (
            request_hash(
                {
                    "messages": messages,
                    "tools": list(tools),
                    "tool_choice": tool_choice,
                    "response_format": schema,
                    "max_output_tokens": max_output_tokens,
                    "model": tier or model,
                }
            )
            if replayable or cache_ttl_s
            else ""
        )
        log: dict[str, Any] = {
            "tenant_id": scope.tenant_id if scope else None,
            "agent": agent,
            "scope": f"{scope.kind}:{scope.scope_id}" if scope else None,
            "step": step,
        }
        ledger_pk = call_key(scope, step, digest) if scope is not None and replayable else None
        cache_pk = cache_key(scope, agent, digest) if cache_ttl_s else None
        lookups = [
            (kind, pk)
            for kind, pk in (("ledger", ledger_pk), ("cache", cache_pk))
            if pk and self.ledger.enabled
        ]
        reads = [lambda pk=pk: self.ledger.get(pk) for _, pk in lookups]

        # The models: the tier's chain (the downgrade chain is decided after reserving).
        try:
            chain = self._chain(model, tier)
        except ConfigurationError:
            # No price: fail before spending, unless the ledger or cache answers for free.
            hit = self._hit(lookups, run_all(reads), scope, agent, log, started, [], on_delta)
            if hit is None:
                raise
            return hit
        cheaper = self._priced(self._settings.downgrade_chain(tier)) if tier else ()
        prompt_bound = estimate_prompt_tokens(messages, tools, schema)
        worst = self.worst_case((*chain, *cheaper), prompt_bound, max_output_tokens)
        tokens = prompt_bound + max_output_tokens

        # The pre-call wave: lookups, the reservation (held until the deadline plus a
        # margin: given back then if this process dies), the key take, breaker items.
        endpoint = self.client.endpoint
        outcomes = run_all(
            [
                *reads,
                lambda: self.budgets.reserve(scope, agent, worst, deadline=deadline),
                lambda: self.buckets.take_first(self.client.keys.keys(), tokens),
                *self.breaker.warm(endpoint, (*chain, *(cheaper if allow_downgrade else ()))),
            ]
        )
        reserved, taken = outcomes[len(lookups)], outcomes[len(lookups) + 1]
        undo: list[Write] = []
        if reserved.ok:
            undo.append(("budget release", lambda: self.budgets.release(reserved.get())))
        lease, refused_key = taken.get() if taken.ok else (None, "")
        if lease is not None:
            undo.append(("key bucket give-back", lambda: self.buckets.give_back(lease)))
        hit = self._hit(
            lookups, outcomes[: len(lookups)], scope, agent, log, started, undo, on_delta
        )
        if hit is not None:
            return hit
        if not reserved.ok or not taken.ok:
            write_all(undo)
            raise (reserved.error or taken.error)  # type: ignore[misc]
        reservation: Reservation = reserved.get()
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
        attempt = _Attempt(lease)
        try:
            if lease is None:  # the refusal path: the other keys, one take each
                attempt.lease = self.buckets.acquire(
                    self.client.keys.keys(), tokens, skip={refused_key}
                )
            result = self._call_chain(
                chain,
                attempt=attempt,
                messages=messages,
                max_output_tokens=max_output_tokens,
                tools=tools,
                tool_choice=tool_choice,
                response_format=response_format,
                deadline=deadline or NoDeadline(),
                tokens=tokens,
                log=log,
                **({"on_delta": on_delta} if on_delta is not None else {}),
            )
        except BaseException as exc:
            undo = [("budget release", lambda: self.budgets.release(reservation))]
            if isinstance(exc, StreamBroken):  # paid tokens: settled to the estimate, once
                undo = broken_stream_writes(
                    self.budgets, self.rollups, self._prices, reservation, exc, scope, agent
                )
            unused = attempt.take_lease()
            if unused is not None:
                undo.append(("key bucket give-back", lambda: self.buckets.give_back(unused)))
            write_all(undo)
            raise
        result = replace(result, downgraded=downgraded)
        cost = self._prices.cost(result.model, result.usage)
        writes: list[Write] = [
            (
                "budget settlement",
                lambda: self.budgets.settle(
                    reservation,
                    cost,
                    scope=scope,
                    agent=agent,
                    model=result.model,
                    usage=result.usage,
                ),
            ),
            (
                "usage rollup",
                lambda: self.rollups.record(
                    scope=scope, agent=agent, model=result.model, usage=result.usage, cost=cost
                ),
            ),
        ]
        if ledger_pk:
            writes.append(("call ledger", lambda: self.ledger.put(ledger_pk, result, cost)))
        if cache_pk:
            writes.append(
                (
                    "response cache",
                    lambda: self.ledger.put(cache_pk, result, cost, ttl_s=cache_ttl_s),
                )
            )
        writes.extend(self._key_and_breaker_writes(attempt, result))
        post(writes, last=not getattr(result.message, "tool_calls", None))
        observe(result, cost, log, started)
        return result

    def _hit(
        self,
        lookups: Sequence[tuple[str, str]],
        outcomes: Sequence[Outcome[Any]],
        scope: CallScope | None,
        agent: str,
        log: dict[str, Any],
        started: float,
        undo: list[Write],
        on_delta: Callable[[str], None] | None = None,
    ) -> ChatResult | None:
        """A ledger replay or a cache hit (the first that answered), after undoing the
        wave's reservation and key take together with the usage count (one wave)."""
        found: tuple[str, Any] | None = None
        for (kind, _), outcome in zip(lookups, outcomes, strict=True):
            if outcome.error is not None:
                write_all(undo)
                raise outcome.error
            if outcome.value is not None:
                found = (kind, outcome.value)
                break
        if found is None:
            return None
        kind, (stored, paid) = found
        hit: dict[str, Any]
        if kind == "ledger":
            result, cost = replace(stored, replayed=True), paid
            hit = {"ledger_hit": True}
        else:
            result, cost = replace(stored, usage=Usage(), cache_hit=True, attempts=0), Decimal(0)
            hit = {"cache_hit": True, "saved": paid}
        model = result.model
        write_all([*undo, ("usage", lambda: self._record_unpaid(scope, agent, model, **hit))])
        observe(result, cost, log, started, **hit)
        if on_delta is not None:  # a replay streams its whole text as one delta
            on_delta(replay_text(result))
        return result

    def _key_and_breaker_writes(self, attempt: _Attempt, result: ChatResult) -> list[Write]:
        writes: list[Write] = []
        used, admission = attempt.used, attempt.admission
        if used is not None:
            actual = result.usage.input_tokens + result.usage.output_tokens
            writes.append(("key bucket settlement", lambda: self.buckets.settle(used, actual)))
        if admission is not None and admission.needs_reset:
            endpoint, model = self.client.endpoint, attempt.model
            writes.append(
                ("circuit breaker reset", lambda: self.breaker.success(endpoint, model, admission))
            )
        return writes

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
        attempt: _Attempt,
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
                    model,
                    admission,
                    attempt=attempt,
                    deadline=deadline,
                    tokens=tokens,
                    log=log,
                    **request,
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
        attempt: _Attempt,
        deadline: Deadline,
        tokens: int,
        log: dict[str, Any],
        **request: Any,
    ) -> ChatResult:
        """One model's attempts; the answer's lease and admission go to ``attempt`` (the
        key settlement and any breaker reset are the post-call wave's)."""
        endpoint = self.client.endpoint
        keys = self.client.keys.keys()
        attempts = self._settings.model_max_attempts
        for n in range(1, attempts + 1):
            # The first attempt uses the pre-call wave's take; a retry takes again.
            lease: KeyLease = attempt.take_lease() or self.buckets.acquire(keys, tokens)
            try:
                result = self.client.complete(
                    model=model, api_key=lease.api_key, deadline=deadline, **request
                )
            except (ModelRateLimited, ModelAuthFailed) as exc:
                wait = self._wait(exc, n)
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
                    if n == attempts:
                        if isinstance(exc, ModelAuthFailed):
                            raise
                        raise _NextModel() from exc  # this model's attempts are used up
                    continue
                if isinstance(exc, ModelAuthFailed):
                    raise
                self._pause(exc, wait, n, attempts, deadline, model, log)
                continue
            except (ModelUnavailable, ModelProviderError) as exc:
                opened = self.breaker.failure(endpoint, model, admission)
                if opened or admission.probe:
                    raise _NextModel() from exc
                self._pause(exc, self._wait(exc, n), n, attempts, deadline, model, log)
                continue
            attempt.used, attempt.admission, attempt.model = lease, admission, model
            return replace(result, attempts=n)
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
        """Count an answer the provider did not serve (a replay or a cache hit)."""
        self.budgets.record_unpaid(scope=scope, agent=agent, model=model, **hit)

"""Embeddings through the gateway, like any model call (``POST /v1/embeddings``).

Per call, as :mod:`stratus.gateway` does for chat:

1. **The pre-call wave** (one DynamoDB round trip): the call-ledger lookup (``EMBED#``
   entries in the ledger table: a retry of the same scope and step with the same texts
   gets the stored vectors and pays nothing), the budget reservation of the worst case
   on every scope (the texts' token upper bound, :mod:`stratus.tokens`, at the model's
   input price; ``429 budget_exceeded`` / ``402 job_budget_exceeded``), the key-bucket
   take. A ledger hit gives the reservation and the take back.
2. **The call**: ``client.embeddings.create(model, input, dimensions)`` with one of the
   model keys, behind the same circuit breaker (per endpoint and model); retryable
   failures back off with full jitter (or ``Retry-After``) within the deadline, a key's
   429 moves to another key.
3. **The post-call wave** (one round trip): the settlement to the real cost (input
   tokens at the price table's rate), the unit's usage total, the ledger entry, the key
   bucket's settlement, the breaker's reset; metrics and one log line (``observe``).

The ledger keeps the vectors as base64 float32 (a 256-dimension vector is about 1.4 KB).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, cast

from stratus.agents import CallScope
from stratus.config import Settings
from stratus.deadline import Deadline, NoDeadline
from stratus.errors import DeadlineExceeded, ModelAuthFailed, ModelRateLimited, ModelUnavailable
from stratus.fanout import run_all
from stratus.gateway import DEFAULT_KEY_COOLDOWN_S, ModelGateway
from stratus.gateway_bookkeeping import Write, observe, post, write_all
from stratus.gateway_stores.ports import CompletionRecords
from stratus.ledger import request_hash
from stratus.llm import FAKE_MODEL_FINGERPRINT, MAX_RETRY_AFTER_S, MIN_CALL_S, classify, retry_hint
from stratus.observability import logger
from stratus.prices import PriceTable
from stratus.ratelimit import KeyLease
from stratus.tokens import text_tokens
from stratus.usage import Usage

FAKE_HEADER = "x-stratus-fake-model"


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors of one embeddings call (one per input text, in order) and what it cost."""

    vectors: list[list[float]]
    model: str
    usage: Usage
    cost_usd: Decimal
    fake_model: bool = False
    #: Replayed from the call ledger (usage and cost are the original call's).
    replayed: bool = False
    attempts: int = 1
    fallback_from: tuple[str, ...] = ()
    downgraded: bool = False


class Embedder(Protocol):
    """What memory needs: texts in, vectors out, billed to ``scope``."""

    @property
    def dimension(self) -> int: ...

    def embed(
        self,
        texts: Sequence[str],
        *,
        scope: CallScope | None,
        step: str,
        agent: str,
        deadline: Deadline | None = None,
    ) -> EmbeddingResult: ...


def embed_key(scope: CallScope, step: str, digest: str) -> str:
    return f"EMBED#{scope.tenant_id}#{scope.kind}#{scope.scope_id}#{step}#{digest}"


def _pack(vectors: list[list[float]]) -> list[str]:
    return [base64.b64encode(array("f", v).tobytes()).decode() for v in vectors]


def _unpack(packed: list[str]) -> list[list[float]]:
    out = []
    for text in packed:
        values = array("f")
        values.frombytes(base64.b64decode(text))
        out.append(list(values))
    return out


class EmbeddingGateway:
    """Budgets, ledger, keys and breaker around ``embeddings.create``."""

    def __init__(
        self,
        gateway: ModelGateway,
        settings: Settings,
        prices: PriceTable,
        *,
        records: CompletionRecords | None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._gateway = gateway
        self._settings = settings
        self._prices = prices
        self._records = records
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.model = settings.embedding_model

    @property
    def dimension(self) -> int:
        return self._settings.memory_dimension

    def embed(
        self,
        texts: Sequence[str],
        *,
        scope: CallScope | None,
        step: str,
        agent: str,
        deadline: Deadline | None = None,
    ) -> EmbeddingResult:
        g, model, texts = self._gateway, self.model, list(texts)
        started = time.perf_counter()
        agent = agent or (scope.agent if scope else "")
        self._prices.price_for(model)  # no price: fail before spending
        digest = request_hash({"embed": texts, "model": model, "dimensions": self.dimension})
        pk = embed_key(scope, step, digest) if scope and scope.replayable else None
        tokens = sum(text_tokens(t) for t in texts) + 1
        worst = self._prices.cost(model, Usage(input_tokens=tokens))
        log: dict[str, Any] = {
            "tenant_id": scope.tenant_id if scope else None,
            "agent": agent,
            "scope": f"{scope.kind}:{scope.scope_id}" if scope else None,
            "step": step,
            "call": "embeddings",
        }
        found, reserved, taken = run_all(
            [
                lambda: self._replay(pk),
                lambda: g.budgets.reserve(scope, agent, worst, deadline=deadline),
                lambda: g.buckets.take_first(g.client.keys.keys(), tokens),
            ]
        )
        undo: list[Write] = []
        if reserved.ok:
            undo.append(("budget release", lambda: g.budgets.release(reserved.get())))
        lease, refused_key = taken.get() if taken.ok else (None, "")
        if lease is not None:
            held: KeyLease = lease
            undo.append(("key bucket give-back", lambda: g.buckets.give_back(held)))
        if found.ok and found.value is not None:
            hit = found.value
            unpaid = (
                "usage",
                lambda: g.budgets.record_unpaid(
                    scope=scope, agent=agent, model=model, ledger_hit=True
                ),
            )
            write_all([*undo, unpaid])
            observe(cast(Any, hit), hit.cost_usd, log, started, ledger_hit=True)
            return hit
        if not reserved.ok or not taken.ok:
            write_all(undo)
            raise (reserved.error or taken.error)  # type: ignore[misc]
        reservation = reserved.get()
        try:
            if lease is None:
                lease = g.buckets.acquire(g.client.keys.keys(), tokens, skip={refused_key})
            result, used, admission = self._call(
                texts, lease, tokens, deadline or NoDeadline(), log
            )
        except BaseException:
            back: list[Write] = [("budget release", lambda: g.budgets.release(reservation))]
            write_all(back)
            raise
        cost = self._prices.cost(model, result.usage)
        result = EmbeddingResult(**{**result.__dict__, "cost_usd": cost})
        writes: list[Write] = [
            (
                "budget settlement",
                lambda: g.budgets.settle(
                    reservation, cost, scope=scope, agent=agent, model=model, usage=result.usage
                ),
            ),
            (
                "usage rollup",
                lambda: g.rollups.record(
                    scope=scope, agent=agent, model=model, usage=result.usage, cost=cost
                ),
            ),
            ("key bucket settlement", lambda: g.buckets.settle(used, result.usage.input_tokens)),
        ]
        if pk and self._records is not None:
            writes.append(("call ledger", lambda: self._store(pk, result)))
        if admission.needs_reset:
            endpoint = g.client.endpoint
            writes.append(
                ("circuit breaker reset", lambda: g.breaker.success(endpoint, model, admission))
            )
        post(writes)
        observe(cast(Any, result), cost, log, started)
        return result

    # -- the ledger

    def _replay(self, pk: str | None) -> EmbeddingResult | None:
        if pk is None or self._records is None:
            return None
        stored = self._records.get(pk)
        if stored is None or stored.expires_at < self._clock():
            return None
        data = json.loads(stored.completion)
        return EmbeddingResult(
            vectors=_unpack(data["vectors"]),
            model=data["model"],
            usage=Usage.model_validate(data["usage"]),
            cost_usd=Decimal(data["cost_usd"]),
            fake_model=bool(data["fake_model"]),
            replayed=True,
            attempts=0,
        )

    def _store(self, pk: str, result: EmbeddingResult) -> None:
        assert self._records is not None
        now = int(self._clock())
        text = json.dumps(
            {
                "vectors": _pack(result.vectors),
                "model": result.model,
                "usage": result.usage.model_dump(),
                "cost_usd": str(result.cost_usd),
                "fake_model": result.fake_model,
            }
        )
        self._records.put_if_absent(pk, text, expires_at=now + self._settings.ledger_ttl_s, now=now)

    # -- the call (the breaker, keys, retries)

    def _call(
        self, texts: list[str], lease: Any, tokens: int, deadline: Deadline, log: dict[str, Any]
    ) -> tuple[EmbeddingResult, Any, Any]:
        g, model, s = self._gateway, self.model, self._settings
        endpoint = g.client.endpoint
        admission = g.breaker.before(endpoint, model)
        if not admission.allowed:
            raise ModelUnavailable(
                f"the circuit breaker of {model} is {admission.state}",
                details={"model": model, "error": f"circuit_{admission.state}"},
            )
        keys = g.client.keys.keys()
        for n in range(1, s.model_max_attempts + 1):
            lease = lease or g.buckets.acquire(keys, tokens)
            try:
                result = self._create(texts, lease.api_key, deadline)
            except (ModelRateLimited, ModelAuthFailed) as exc:
                if isinstance(exc, ModelAuthFailed) and len(keys) == 1:
                    raise
                if len(keys) > 1:
                    cool = 300.0 if isinstance(exc, ModelAuthFailed) else None
                    g.buckets.cool_down(
                        lease, cool or retry_hint(exc).after_s or DEFAULT_KEY_COOLDOWN_S
                    )
                    lease = None
                    if n == s.model_max_attempts:
                        raise
                    continue
                lease = None
                self._pause(exc, n, deadline, log)
                continue
            except ModelUnavailable as exc:
                opened = g.breaker.failure(endpoint, model, admission)
                lease = None
                if opened or admission.probe:
                    raise
                self._pause(exc, n, deadline, log)
                continue
            except DeadlineExceeded:
                raise
            except Exception as exc:
                if getattr(exc, "retry_hint", None) is None or not retry_hint(exc).retryable:
                    raise
                g.breaker.failure(endpoint, model, admission)
                lease = None
                self._pause(exc, n, deadline, log)
                continue
            return EmbeddingResult(**{**result.__dict__, "attempts": n}), lease, admission
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, exc: Exception, attempt: int, deadline: Deadline, log: dict[str, Any]) -> None:
        s = self._settings
        hint = retry_hint(exc)
        if not hint.retryable or attempt >= s.model_max_attempts:
            raise exc
        wait = hint.after_s
        if wait is None:
            wait = self._jitter() * min(
                s.model_backoff_cap_s, s.model_backoff_base_s * 2 ** (attempt - 1)
            )
        pause = min(wait, MAX_RETRY_AFTER_S)
        if pause + MIN_CALL_S > deadline.remaining_s() - s.deadline_margin_s:
            raise exc
        logger.warning(
            "embeddings call failed, retrying",
            extra={**log, "attempt": attempt, "error": getattr(exc, "code", type(exc).__name__)},
        )
        self._sleep(pause)

    def _client(self, api_key: str) -> Any:
        import openai

        with self._lock:
            client = self._clients.get(api_key)
            if client is None:
                base = self._settings.openai_base_url
                client = openai.OpenAI(
                    api_key=api_key,
                    base_url=str(base) if base else None,
                    max_retries=0,
                    timeout=self._settings.model_timeout_s,
                )
                self._clients[api_key] = client
            return client

    def _create(self, texts: list[str], api_key: str, deadline: Deadline) -> EmbeddingResult:
        import openai

        s = self._settings
        budget = deadline.remaining_s() - s.deadline_margin_s
        if budget < MIN_CALL_S:
            raise DeadlineExceeded("not enough time left to call the model")
        try:
            raw = self._client(api_key).embeddings.with_raw_response.create(
                model=self.model,
                input=texts,
                dimensions=self.dimension,
                timeout=min(s.model_timeout_s, budget),
            )
        except openai.APIError as exc:
            error, hint = classify(exc)
            error.retry_hint = hint  # type: ignore[attr-defined]
            raise error from exc
        response = raw.parse()
        extra = getattr(response, "model_extra", None) or {}
        fake = (
            str(raw.headers.get(FAKE_HEADER, "")).lower() == "true"
            or extra.get("system_fingerprint") == FAKE_MODEL_FINGERPRINT
        )
        rows = sorted(response.data, key=lambda row: row.index)
        usage = getattr(response, "usage", None)
        return EmbeddingResult(
            vectors=[list(row.embedding) for row in rows],
            model=self.model,
            usage=Usage(input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0)),
            cost_usd=Decimal(0),
            fake_model=fake,
        )

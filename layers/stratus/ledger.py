"""The call ledger (every step billed once) and the opt-in response cache.

Both live in the ledger table (key ``pk``, TTL ``expires_at``):

* ``CALL#<tenant>#<kind>#<scope id>#<step>#<request hash>``: the completion of
  one step of one billable unit. A retry of the same unit and step with the
  same request (SQS redelivery, a Lambda or Step Functions retry, a replay
  under the same Idempotency-Key) finds it and gets the stored completion
  without calling the provider. The step is deterministic across retries
  (``<scope step>:<iteration>``) and the hash covers everything that decides
  the answer (messages, tools, tool choice, output schema, output limit, tier),
  so a changed request is a new call, never a stale replay. The first writer
  wins (conditional put).
* ``CACHE#<tenant>#<agent>#<request hash>``: an exact-match answer of an agent
  that opted in, kept for the agent's TTL, with the cost it saved on each hit.
  Tenant-scoped: one tenant's answers are never served to another.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from stratus.agents import CallScope
from stratus.config import Settings
from stratus.gateway_stores.ports import CompletionRecords
from stratus.llm import ChatResult
from stratus.observability import logger
from stratus.usage import Usage


@functools.lru_cache(maxsize=256)
def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema, built once per class (pydantic rebuilds it on every call;
    it is part of every structured call's request hash). Read it, never change it."""
    return model.model_json_schema()


def request_hash(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def call_key(scope: CallScope, step: str, digest: str) -> str:
    return f"CALL#{scope.tenant_id}#{scope.kind}#{scope.scope_id}#{step}#{digest}"


def cache_key(scope: CallScope | None, agent: str, digest: str) -> str:
    tenant = scope.tenant_id if scope else "-"
    return f"CACHE#{tenant}#{agent}#{digest}"


def _message_json(message: Any) -> dict[str, Any]:
    calls = [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.function.name, "arguments": c.function.arguments},
        }
        for c in (getattr(message, "tool_calls", None) or [])
    ]
    data: dict[str, Any] = {
        "role": "assistant",
        "content": getattr(message, "content", None),
        "refusal": getattr(message, "refusal", None),
    }
    if calls:
        data["tool_calls"] = calls
    return data


def encode(result: ChatResult, cost: Decimal) -> str:
    return json.dumps(
        {
            "message": _message_json(result.message),
            "model": result.model,
            "response_model": result.response_model,
            "usage": result.usage.model_dump(),
            "finish_reason": result.finish_reason,
            "fake_model": result.fake_model,
            "cost_usd": str(cost),
        }
    )


def decode(text: str) -> tuple[ChatResult, Decimal]:
    from openai.types.chat import ChatCompletionMessage

    data = json.loads(text)
    message = ChatCompletionMessage.model_validate(data["message"])
    result = ChatResult(
        message=message,
        model=data["model"],
        response_model=data["response_model"],
        usage=Usage.model_validate(data["usage"]),
        finish_reason=data["finish_reason"],
        attempts=0,
        latency_ms=0.0,
        fake_model=bool(data["fake_model"]),
    )
    return result, Decimal(data["cost_usd"])


class CompletionStore:
    """Get and put completions in the ledger's records; off (a no-op) without records."""

    def __init__(
        self,
        settings: Settings,
        records: CompletionRecords | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._records = records
        self._ttl_s = settings.ledger_ttl_s
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._records is not None

    def get(self, pk: str) -> tuple[ChatResult, Decimal] | None:
        if self._records is None:
            return None
        stored = self._records.get(pk)
        if stored is None or stored.expires_at < self._clock():
            return None  # TTL deletion lags; an expired entry is gone for us
        return decode(stored.completion)

    def put(self, pk: str, result: ChatResult, cost: Decimal, *, ttl_s: int | None = None) -> None:
        if self._records is None:
            return
        now = int(self._clock())
        try:
            # First writer wins; a False here means another writer stored the same step.
            self._records.put_if_absent(
                pk, encode(result, cost), expires_at=now + (ttl_s or self._ttl_s), now=now
            )
        except Exception:
            # The answer is still good; only a later retry would pay again.
            logger.exception("call ledger write failed", extra={"key": pk[:80]})

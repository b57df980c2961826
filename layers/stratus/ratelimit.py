"""Per-key request and token limits, shared by the whole fleet (limits table).

Each API key has a bucket per minute: ``BUCKET#<key id>#<minute>`` holding the
requests and tokens taken in that minute (``key id`` is a hash prefix: keys
themselves are never stored). Taking from a bucket is one conditional
``UpdateItem`` (``ADD requests 1, tokens t`` if ``requests < rpm`` and
``tokens <= tpm - t``), atomic across every Lambda instance, and the bucket
refills whole at the next minute (a token bucket with a one-minute refill;
like any fixed window it allows up to twice the rate across a boundary,
which the provider's own limiter then answers with 429 and ``Retry-After``).
Tokens are reserved as the worst case (prompt bound + max output) and settled
to the real count after the call.

A call goes to the least-loaded key: one ``BatchGetItem`` reads every key's
bucket and cool-down (``KEY#<key id>``, set when the provider answered 429 for
that key, for its ``Retry-After``), and keys are tried from the emptiest up.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from stratus import ddb
from stratus.config import Settings
from stratus.errors import ModelRateLimited
from stratus.observability import logger

WINDOW_S = 60


def key_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class KeyLease:
    api_key: str
    key_id: str
    window: int
    tokens: int


class KeyBuckets:
    """Least-loaded key selection under fleet-wide RPM/TPM limits."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._table = settings.limits_table
        self._rpm = settings.key_rpm
        self._tpm = settings.key_tpm
        self._clock = clock
        # Without a table (scripts, unit tests): cool-downs in this process only.
        self._local_cooldown: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, api_keys: Sequence[str], tokens: int) -> KeyLease:
        """A key with room for one request of ``tokens``, the least loaded first."""
        now = self._clock()
        window = int(now // WINDOW_S)
        tokens = min(tokens, self._tpm)
        ids = {key_id(k): k for k in api_keys}
        loads, cooling = self._loads(list(ids), window, now)
        candidates = [kid for kid in ids if cooling.get(kid, 0.0) <= now]
        candidates.sort(key=lambda kid: loads.get(kid, 0.0))
        for kid in candidates:
            if self._take(kid, window, tokens):
                return KeyLease(api_key=ids[kid], key_id=kid, window=window, tokens=tokens)
        waits = [until - now for until in cooling.values() if until > now]
        waits.append((window + 1) * WINDOW_S - now)
        retry = max(1, int(min(waits) + 0.999))
        raise ModelRateLimited(
            "every model API key is at its rate limit; retry shortly",
            headers={"Retry-After": str(retry)},
            details={"keys": len(ids)},
        )

    def settle(self, lease: KeyLease, actual_tokens: int) -> None:
        delta = actual_tokens - lease.tokens
        if not self._table or delta == 0:
            return
        try:
            ddb.client().update_item(
                TableName=self._table,
                Key=ddb.key(pk=f"BUCKET#{lease.key_id}#{lease.window}"),
                UpdateExpression="ADD tokens :d",
                ExpressionAttributeValues=ddb.values(d=delta),
            )
        except ClientError:
            logger.exception("rate limit settlement failed")

    def cool_down(self, lease: KeyLease, seconds: float) -> None:
        """The provider said this key is rate limited: skip it fleet-wide for a while."""
        until = self._clock() + max(1.0, seconds)
        with self._lock:
            self._local_cooldown[lease.key_id] = until
        if not self._table:
            return
        try:
            ddb.client().update_item(
                TableName=self._table,
                Key=ddb.key(pk=f"KEY#{lease.key_id}"),
                UpdateExpression="SET cooldown_until = :u, expires_at = :e",
                ExpressionAttributeValues=ddb.values(u=until, e=int(until) + 3600),
            )
        except ClientError:
            logger.exception("key cool-down could not be shared")

    def _loads(
        self, kids: list[str], window: int, now: float
    ) -> tuple[dict[str, float], dict[str, float]]:
        with self._lock:
            cooling = {k: v for k, v in self._local_cooldown.items() if k in kids}
        if not self._table:
            return {}, cooling
        keys = [ddb.key(pk=f"BUCKET#{kid}#{window}") for kid in kids]
        keys += [ddb.key(pk=f"KEY#{kid}") for kid in kids]
        response = ddb.client().batch_get_item(RequestItems={self._table: {"Keys": keys}})
        loads: dict[str, float] = {}
        for raw in response.get("Responses", {}).get(self._table, []):
            item: dict[str, Any] = ddb.item(raw)
            parts = str(item["pk"]).split("#")
            if parts[0] == "BUCKET":
                loads[parts[1]] = max(
                    float(item.get("requests", 0)) / self._rpm,
                    float(item.get("tokens", 0)) / self._tpm,
                )
            elif parts[0] == "KEY":
                cooling[parts[1]] = max(
                    cooling.get(parts[1], 0.0), float(item.get("cooldown_until", 0))
                )
        return loads, cooling

    def _take(self, kid: str, window: int, tokens: int) -> bool:
        if not self._table:
            return True
        try:
            ddb.client().update_item(
                TableName=self._table,
                Key=ddb.key(pk=f"BUCKET#{kid}#{window}"),
                UpdateExpression="ADD requests :one, tokens :t SET expires_at = :e",
                ConditionExpression=(
                    "attribute_not_exists(requests) OR (requests < :rpm AND tokens <= :room)"
                ),
                ExpressionAttributeValues=ddb.values(
                    one=1,
                    t=tokens,
                    rpm=self._rpm,
                    room=self._tpm - tokens,
                    e=(window + 2) * WINDOW_S,
                ),
            )
        except ClientError as exc:
            if ddb.conditional_failed(exc):
                return False
            raise
        return True

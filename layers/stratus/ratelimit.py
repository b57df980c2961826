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

The buckets live behind :class:`stratus.gateway_stores.ports.BucketStore` (the
limits table, or an in-process store without one).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stratus.config import Settings
from stratus.errors import ModelRateLimited
from stratus.gateway_stores.ports import BucketStore
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

    def __init__(
        self,
        settings: Settings,
        store: BucketStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._rpm = settings.key_rpm
        self._tpm = settings.key_tpm
        self._clock = clock
        # Cool-downs this process set: honoured at once, even before the store shows them.
        self._local_cooldown: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, api_keys: Sequence[str], tokens: int) -> KeyLease:
        """A key with room for one request of ``tokens``, the least loaded first."""
        now = self._clock()
        window = int(now // WINDOW_S)
        tokens = min(tokens, self._tpm)
        ids = {key_id(k): k for k in api_keys}
        loads, cooling = self._loads(list(ids), window)
        candidates = [kid for kid in ids if cooling.get(kid, 0.0) <= now]
        candidates.sort(key=lambda kid: loads.get(kid, 0.0))
        expires = (window + 2) * WINDOW_S
        for kid in candidates:
            taken = self._store.take(
                kid, window, tokens, rpm=self._rpm, tpm=self._tpm, expires_at=expires
            )
            if taken:
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
        if delta == 0:
            return
        try:
            self._store.add_tokens(lease.key_id, lease.window, delta)
        except Exception:  # bookkeeping never fails a paid call
            logger.exception("rate limit settlement failed")

    def cool_down(self, lease: KeyLease, seconds: float) -> None:
        """The provider said this key is rate limited: skip it fleet-wide for a while."""
        until = self._clock() + max(1.0, seconds)
        with self._lock:
            self._local_cooldown[lease.key_id] = until
        try:
            self._store.cool_down(lease.key_id, until, expires_at=int(until) + 3600)
        except Exception:
            logger.exception("key cool-down could not be shared")

    def _loads(self, kids: list[str], window: int) -> tuple[dict[str, float], dict[str, float]]:
        with self._lock:
            cooling = {k: v for k, v in self._local_cooldown.items() if k in kids}
        buckets, shared = self._store.read(kids, window)
        for kid, until in shared.items():
            cooling[kid] = max(cooling.get(kid, 0.0), until)
        loads = {
            kid: max(load.requests / self._rpm, load.tokens / self._tpm)
            for kid, load in buckets.items()
        }
        return loads, cooling

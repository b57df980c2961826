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
to the real count after the call: unused tokens are carried by this process into
its next take on the same bucket (``ADD tokens t - unused``: no request of its own;
the condition stays exact), or written back at once in the gateway's post-call wave
when the bucket is at least half full (where they matter to other callers) or when
the call used more than it took. Until then a bucket shows more tokens than were
used: conservative, never an overshoot; a new minute's bucket starts empty anyway.

A call goes to the least-loaded key, ranked from a **per-process copy** of every
key's bucket and cool-down (``KEY#<key id>``, set when the provider answered 429
for that key, for its ``Retry-After``): one ``BatchGetItem`` refreshes it in the
background once it is ``gateway_state_cache_s`` old (single-flight), and this
process's own takes, settlements and cool-downs count in it at once. So the
critical path holds only the one conditional ``take`` (in the gateway's pre-call
wave); a refused take tries the next key (the refusal path) and refreshes the copy.

**What the staleness lets through.** The limits themselves are never stale: every
take is a conditional write on the shared bucket. A stale copy only ranks keys
less well (another process's load is seen up to ``gateway_state_cache_s`` plus one
refresh late), and a cool-down set by *another* process is seen that late too: in
that window this process may send calls to a key the provider just answered 429
for (each one a 429 that cools the key down here at once and moves to another).

A take made in the pre-call wave for a call that then does not run (a ledger or
cache answer, a budget refusal) gives its tokens back, but its request stays
counted against the key's RPM for that minute: the store has no way to take a
request back yet (conservative: never more requests than ``key_rpm``).

The buckets live behind :class:`stratus.gateway_stores.ports.BucketStore` (the
limits table, or an in-process store without one).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from stratus.breaker import Spawn, StateCache
from stratus.config import Settings
from stratus.errors import ModelRateLimited
from stratus.gateway_stores.ports import BucketLoad, BucketStore
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


@dataclass(frozen=True)
class _View:
    """The shared buckets of one window and the cool-downs, as read at one moment, with
    what this process had taken by then (its later takes are added on top)."""

    window: int
    loads: dict[str, BucketLoad] = field(default_factory=dict)
    cooling: dict[str, float] = field(default_factory=dict)
    taken: dict[str, BucketLoad] = field(default_factory=dict)


class KeyBuckets:
    """Least-loaded key selection under fleet-wide RPM/TPM limits."""

    def __init__(
        self,
        settings: Settings,
        store: BucketStore,
        *,
        clock: Callable[[], float] = time.time,
        spawn: Spawn | None = None,
    ) -> None:
        self._store = store
        self._rpm = settings.key_rpm
        self._tpm = settings.key_tpm
        self._clock = clock
        self._cache: StateCache[_View] = StateCache(settings.gateway_state_cache_s, clock, spawn)
        # Cool-downs this process set: honoured at once, even before the store shows them.
        self._local_cooldown: dict[str, float] = {}
        # What this process took per (key, window): counted before the next refresh.
        self._taken: dict[tuple[str, int], BucketLoad] = {}
        # Unused tokens per (key, window) not written back yet: folded into the next take.
        self._credit: dict[tuple[str, int], int] = {}
        # The tokens the last read showed per key: (window, tokens).
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        # Ties (no load known yet) go to a different key in each process.
        self._salt = str(random.random())  # noqa: S311 - spreading, not security

    # -- the critical path

    def take_first(self, api_keys: Sequence[str], tokens: int) -> tuple[KeyLease | None, str]:
        """One conditional take on the key ranked first (the gateway's pre-call wave):
        the lease, or None and the key id refused ("" if every key is cooling down);
        then :meth:`acquire` with ``skip`` tries the others."""
        now = self._clock()
        window = int(now // WINDOW_S)
        ids = {key_id(k): k for k in api_keys}
        ranked, _ = self._ranked(list(ids), window, now)
        if not ranked:
            return None, ""
        return self._take(ids, ranked[0], window, tokens), ranked[0]

    def acquire(
        self, api_keys: Sequence[str], tokens: int, *, skip: Collection[str] = ()
    ) -> KeyLease:
        """A key with room for one request of ``tokens``, the least loaded first
        (``skip``: key ids refused already in this call); else ``ModelRateLimited``."""
        now = self._clock()
        window = int(now // WINDOW_S)
        ids = {key_id(k): k for k in api_keys}
        ranked, cooling = self._ranked(list(ids), window, now)
        for kid in ranked:
            if kid in skip:
                continue
            lease = self._take(ids, kid, window, tokens)
            if lease is not None:
                return lease
        waits = [until - now for until in cooling.values() if until > now]
        waits.append((window + 1) * WINDOW_S - now)
        retry = max(1, int(min(waits) + 0.999))
        raise ModelRateLimited(
            "every model API key is at its rate limit; retry shortly",
            headers={"Retry-After": str(retry)},
            details={"keys": len(ids)},
        )

    def _take(self, ids: dict[str, str], kid: str, window: int, tokens: int) -> KeyLease | None:
        tokens = min(tokens, self._tpm)
        expires = (window + 2) * WINDOW_S
        with self._lock:
            credit = self._credit.pop((kid, window), 0)
        # ``tokens + credit``: the bucket holds ``-credit`` tokens too many, so both the
        # ADD and the room condition (``tokens <= tpm - t``) come out exact.
        if not self._store.take(
            kid, window, tokens + credit, rpm=self._rpm, tpm=self._tpm, expires_at=expires
        ):
            if credit:
                self._carry(kid, window, credit)
            if self._cache.enabled:  # the refusal path: learn the fleet's loads
                self._refresh(list(ids), window, wait=False)
            return None
        self._count(kid, window, 1, tokens)
        return KeyLease(api_key=ids[kid], key_id=kid, window=window, tokens=tokens)

    # -- after the call (the post-call wave) or instead of it

    def settle(self, lease: KeyLease, actual_tokens: int) -> None:
        delta = actual_tokens - lease.tokens
        if delta == 0:
            return
        busy = self._busy(lease.key_id, lease.window)
        self._count(lease.key_id, lease.window, 0, delta)
        if delta < 0 and not busy:
            self._carry(lease.key_id, lease.window, delta)  # with the next take: no request
            return
        try:
            self._store.add_tokens(lease.key_id, lease.window, delta)
        except Exception:  # bookkeeping never fails a paid call
            logger.exception("rate limit settlement failed")

    def give_back(self, lease: KeyLease) -> None:
        """The call never ran (a ledger or cache hit, a budget refusal): its request and
        its tokens go back (one write, on those paths only), so a tenant refused by its
        budget never uses up a shared key's requests per minute."""
        self._count(lease.key_id, lease.window, -1, -lease.tokens)
        try:
            self._store.untake(lease.key_id, lease.window, lease.tokens)
        except Exception:  # bookkeeping never fails the caller's answer
            logger.exception("rate limit give-back failed")

    def cool_down(self, lease: KeyLease, seconds: float) -> None:
        """The provider said this key is rate limited: skip it fleet-wide for a while."""
        until = self._clock() + max(1.0, seconds)
        with self._lock:
            self._local_cooldown[lease.key_id] = until
        try:
            self._store.cool_down(lease.key_id, until, expires_at=int(until) + 3600)
        except Exception:
            logger.exception("key cool-down could not be shared")

    # -- the per-process copy

    def _carry(self, kid: str, window: int, delta: int) -> None:
        with self._lock:
            for old in [k for k in self._credit if k[1] < window]:
                del self._credit[old]  # a past minute's bucket no longer limits anyone
            self._credit[(kid, window)] = self._credit.get((kid, window), 0) + delta

    def _busy(self, kid: str, window: int) -> bool:
        """At least half the bucket's tokens taken, as far as this process knows."""
        with self._lock:
            mine = self._taken.get((kid, window), BucketLoad()).tokens
            seen_window, seen = self._seen.get(kid, (window, 0))
        return max(seen if seen_window == window else 0, mine) * 2 >= self._tpm

    def _count(self, kid: str, window: int, requests: int, tokens: int) -> None:
        with self._lock:
            for old in [k for k in self._taken if k[1] < window - 1]:
                del self._taken[old]
            load = self._taken.get((kid, window), BucketLoad())
            self._taken[(kid, window)] = BucketLoad(load.requests + requests, load.tokens + tokens)

    @staticmethod
    def _cache_key(kids: Sequence[str]) -> str:
        return ",".join(sorted(kids))

    def _reader(self, kids: list[str], window: int) -> Callable[[], _View]:
        def read() -> _View:
            with self._lock:
                taken = {k: self._taken.get((k, window), BucketLoad()) for k in kids}
            loads, cooling = self._store.read(kids, window)
            with self._lock:
                self._seen.update({k: (window, load.tokens) for k, load in loads.items()})
            return _View(window, dict(loads), dict(cooling), taken)

        return read

    def _refresh(self, kids: list[str], window: int, *, wait: bool) -> _View | None:
        key = self._cache_key(kids)
        if wait or not self._cache.enabled:
            return self._cache.fill(key, self._reader(kids, window))
        self._cache.refresh_async(key, self._reader(kids, window))
        return None

    def _view(self, kids: list[str], window: int) -> _View | None:
        if not self._cache.enabled:
            return self._refresh(kids, window, wait=True)
        view, fresh = self._cache.get(self._cache_key(kids))
        if view is None or not fresh or view.window != window:
            self._refresh(kids, window, wait=False)  # off the path; use what we know
        return view

    def _ranked(
        self, kids: list[str], window: int, now: float
    ) -> tuple[list[str], dict[str, float]]:
        """The keys not cooling down, least loaded first; and every cool-down known."""
        view = self._view(kids, window)
        with self._lock:
            cooling = {k: v for k, v in self._local_cooldown.items() if k in kids}
            taken = {k: self._taken.get((k, window), BucketLoad()) for k in kids}
        shared = view.loads if view is not None and view.window == window else {}
        base = view.taken if view is not None and view.window == window else {}
        for kid, until in (view.cooling if view is not None else {}).items():
            cooling[kid] = max(cooling.get(kid, 0.0), until)

        def load(kid: str) -> tuple[float, str]:
            seen, mine, then = shared.get(kid, BucketLoad()), taken[kid], base.get(kid)
            requests = seen.requests + mine.requests - (then.requests if then else 0)
            tokens = seen.tokens + mine.tokens - (then.tokens if then else 0)
            tie = hashlib.sha256((self._salt + kid).encode()).hexdigest()
            return max(requests / self._rpm, tokens / self._tpm), tie

        ready = [kid for kid in kids if cooling.get(kid, 0.0) <= now]
        return sorted(ready, key=load), cooling

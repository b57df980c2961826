"""In-memory fakes of the gateway's ports: plain dicts under one lock per store.

They keep state in this process only: unit tests use them, and the composition
root picks them where a concern must keep working without its table (the
circuit breaker and the key buckets).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from stratus.gateway_stores.ports import (
    CLOSED_ATTR,
    OPEN_PREFIX,
    BucketLoad,
    BudgetItem,
    OpenReservation,
    StoredCompletion,
    UsageAdd,
    budget_item,
    usage_attribute,
)


class MemoryBreakerStore:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def read(self, key: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._items.get(key, {}))

    def add_failure(self, key: str) -> int:
        with self._lock:
            item = self._items.setdefault(key, {})
            item["failures"] = int(item.get("failures", 0)) + 1
            return int(item["failures"])

    def reset(self, key: str) -> None:
        with self._lock:
            self._items[key] = {"failures": 0}

    def open_until(self, key: str, until: float) -> None:
        with self._lock:
            item = self._items.setdefault(key, {})
            item["opened_until"] = until
            item.pop("probe_until", None)

    def claim_probe(self, key: str, opened_until: Any, now: float, probe_until: float) -> bool:
        with self._lock:
            item = self._items.get(key)
            if item is None or item.get("opened_until") != opened_until:
                return False
            if "probe_until" in item and not float(item["probe_until"]) < now:
                return False
            item["probe_until"] = probe_until
            return True


class MemoryBucketStore:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, int], BucketLoad] = {}
        self._cooldowns: dict[str, float] = {}
        self._lock = threading.Lock()

    def read(
        self, key_ids: Sequence[str], window: int
    ) -> tuple[dict[str, BucketLoad], dict[str, float]]:
        with self._lock:
            loads = {k: self._buckets[(k, window)] for k in key_ids if (k, window) in self._buckets}
            cooling = {k: self._cooldowns[k] for k in key_ids if k in self._cooldowns}
        return loads, cooling

    def take(
        self, key_id: str, window: int, tokens: int, *, rpm: int, tpm: int, expires_at: int
    ) -> bool:
        with self._lock:
            load = self._buckets.get((key_id, window))
            if load is not None and not (load.requests < rpm and load.tokens <= tpm - tokens):
                return False
            load = load or BucketLoad()
            self._buckets[(key_id, window)] = BucketLoad(load.requests + 1, load.tokens + tokens)
            return True

    def add_tokens(self, key_id: str, window: int, delta: int) -> None:
        with self._lock:
            load = self._buckets.get((key_id, window), BucketLoad())
            self._buckets[(key_id, window)] = BucketLoad(load.requests, load.tokens + delta)

    def untake(self, key_id: str, window: int, tokens: int) -> None:
        with self._lock:
            load = self._buckets.get((key_id, window), BucketLoad())
            self._buckets[(key_id, window)] = BucketLoad(load.requests - 1, load.tokens - tokens)

    def cool_down(self, key_id: str, until: float, *, expires_at: int) -> None:
        with self._lock:
            self._cooldowns[key_id] = until


class MemoryBudgetStore:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def item(self, key: str) -> dict[str, Any]:
        """A copy of one item (for tests)."""
        with self._lock:
            return dict(self._items.get(key, {}))

    def forget(self, key: str) -> None:
        """Drop one item (a request's in-process cap, once the request is long over)."""
        with self._lock:
            self._items.pop(key, None)

    def tenant_limits(self, tenant_id: str) -> dict[str, Any]:
        return self.item(f"LIMITS#{tenant_id}")

    def set_tenant_limits(self, tenant_id: str, limits: Mapping[str, Any]) -> None:
        with self._lock:
            item = self._items.setdefault(f"LIMITS#{tenant_id}", {})
            item["tenant_id"] = tenant_id
            item.update({k: v for k, v in limits.items() if v is not None})

    def reserve(
        self,
        key: str,
        rid: str,
        amount: int,
        *,
        room: int,
        limit: int,
        expires_at: int,
        hold_until: int,
        max_open: int,
    ) -> int | BudgetItem:
        with self._lock:
            item = self._items.setdefault(key, {})
            if (
                ("committed" in item and item["committed"] > room)
                or ("open_n" in item and item["open_n"] >= max_open)
                or CLOSED_ATTR in item
            ):
                return budget_item(item)
            item[OPEN_PREFIX + rid] = {"a": amount, "x": hold_until}
            item["committed"] = item.get("committed", 0) + amount
            item["open_n"] = item.get("open_n", 0) + 1
            item["limit_nusd"] = limit
            item.setdefault("expires_at", expires_at)
            return int(item["committed"])

    def close(self, key: str, *, now: int, expires_at: int) -> BudgetItem:
        with self._lock:
            item = self._items.setdefault(key, {})
            item.setdefault(CLOSED_ATTR, now)
            item.setdefault("expires_at", expires_at)
            return budget_item(item)

    def settle(
        self,
        key: str,
        rid: str,
        *,
        reserved: int,
        actual: int,
        calls: int,
        usage: UsageAdd | None = None,
    ) -> int | None:
        with self._lock:
            item = self._items.setdefault(key, {})
            if item.pop(OPEN_PREFIX + rid, None) is None:
                return None
            item["committed"] = item.get("committed", 0) + actual - reserved
            item["open_n"] = item.get("open_n", 0) - 1
            if actual or calls:
                item["spent"] = item.get("spent", 0) + actual
                item["calls"] = item.get("calls", 0) + calls
            _add(item, usage)
            return int(item.get("spent", 0))

    def record_late(
        self, key: str, actual: int, calls: int, *, usage: UsageAdd | None = None
    ) -> int:
        with self._lock:
            item = self._items.setdefault(key, {})
            item["committed"] = item.get("committed", 0) + actual
            item["spent"] = item.get("spent", 0) + actual
            item["calls"] = item.get("calls", 0) + calls
            _add(item, usage)
            return int(item["spent"])

    def add_usage(self, key: str, usage: UsageAdd, *, expires_at: int) -> None:
        if not usage.nonzero():
            return
        with self._lock:
            item = self._items.setdefault(key, {})
            item.setdefault("expires_at", expires_at)
            _add(item, usage)

    def give_back(self, key: str, entries: Sequence[OpenReservation]) -> list[OpenReservation]:
        released: list[OpenReservation] = []
        with self._lock:
            item = self._items.setdefault(key, {})
            for entry in entries:
                if item.pop(OPEN_PREFIX + entry.rid, None) is None:
                    continue
                item["committed"] = item.get("committed", 0) - entry.amount
                item["open_n"] = item.get("open_n", 0) - 1
                released.append(entry)
        return released

    def read(self, keys: Sequence[str]) -> dict[str, BudgetItem]:
        with self._lock:
            return {k: budget_item(self._items[k]) for k in keys if k in self._items}

    def mark_exhausted(self, key: str) -> int | None:
        with self._lock:
            item = self._items.setdefault(key, {})
            if "exhausted_alerted" in item:
                return None
            item["exhausted_alerted"] = True
            return int(item.get("spent", 0))


def _add(item: dict[str, Any], usage: UsageAdd | None) -> None:
    """``ADD`` the usage counters to an item, as the DynamoDB adapter's write does."""
    if usage is None:
        return
    for counter, value in usage.nonzero():
        name = usage_attribute(counter, usage.member)
        item[name] = item.get(name, 0) + value


class MemoryCompletionRecords:
    def __init__(self) -> None:
        self._items: dict[str, StoredCompletion] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> StoredCompletion | None:
        with self._lock:
            return self._items.get(key)

    def put_if_absent(self, key: str, completion: str, *, expires_at: int, now: int) -> bool:
        with self._lock:
            found = self._items.get(key)
            if found is not None and not found.expires_at < now:
                return False
            self._items[key] = StoredCompletion(completion, expires_at)
            return True


class MemoryRollupStore:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def add(self, pk: str, sk: str, counts: Mapping[str, int], *, expires_at: int) -> None:
        with self._lock:
            row = self._rows.setdefault((pk, sk), {"pk": pk, "sk": sk})
            for name, value in counts.items():
                row[name] = row.get(name, 0) + value
            row["expires_at"] = expires_at

    def rows(self, pk: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for (p, _), row in sorted(self._rows.items()) if p == pk]

    def row(self, pk: str, sk: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._rows.get((pk, sk), {}))


class MemorySecrets:
    """Secrets by name (a missing one raises ``KeyError``)."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self.secrets = dict(secrets or {})

    def get(self, name: str, *, max_age_s: int) -> str:
        return self.secrets[name]


class MemoryAlerts:
    """Keeps every published alert in ``sent``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def publish(self, subject: str, message: dict[str, Any]) -> None:
        with self._lock:
            self.sent.append((subject, message))


class NoAlerts:
    """Publishes nothing (no alerts topic configured)."""

    def publish(self, subject: str, message: dict[str, Any]) -> None:
        return None

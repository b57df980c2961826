"""DynamoDB adapters of the gateway's ports, on :class:`stratus.ddb.Table`.

The breaker, the key buckets and the cool-downs share the limits table (key
``pk``); budgets, the call ledger and the usage rollups have a table each.
Every operation is one request: atomic on its item across the fleet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stratus import ddb
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

#: Expired entries given back per conditional write (the expression stays under 4 KB).
GIVE_BACK_BATCH = 25


class DynamoBreakerStore:
    def __init__(self, table: ddb.Table) -> None:
        self._table = table

    def read(self, key: str) -> dict[str, Any]:
        # Eventually consistent (half the read cost, on every call): an instance may
        # see a just-opened breaker up to a second late, which only lets one more
        # request reach a failing model.
        return self._table.get({"pk": key}, consistent=False) or {}

    def add_failure(self, key: str) -> int:
        new = self._table.update(
            {"pk": key}, "ADD failures :one", values={":one": 1}, returns="UPDATED_NEW"
        )
        return int(new.get("failures", 0))

    def reset(self, key: str) -> None:
        self._table.update(
            {"pk": key},
            "SET failures = :zero REMOVE opened_until, probe_until",
            values={":zero": 0},
            returns="NONE",
        )

    def open_until(self, key: str, until: float) -> None:
        self._table.update(
            {"pk": key},
            "SET opened_until = :u REMOVE probe_until",
            values={":u": until},
            returns="NONE",
        )

    def claim_probe(self, key: str, opened_until: Any, now: float, probe_until: float) -> bool:
        try:
            self._table.update(
                {"pk": key},
                "SET probe_until = :p",
                condition="opened_until = :o AND "
                "(attribute_not_exists(probe_until) OR probe_until < :now)",
                values={":p": probe_until, ":o": opened_until, ":now": now},
                returns="NONE",
            )
        except ddb.ConditionFailed:
            return False
        return True


def _bucket_key(key_id: str, window: int) -> dict[str, Any]:
    return {"pk": f"BUCKET#{key_id}#{window}"}


class DynamoBucketStore:
    """``BUCKET#<key id>#<window>`` (requests, tokens) and ``KEY#<key id>`` (cool-down)."""

    def __init__(self, table: ddb.Table) -> None:
        self._table = table

    def read(
        self, key_ids: Sequence[str], window: int
    ) -> tuple[dict[str, BucketLoad], dict[str, float]]:
        keys = [_bucket_key(k, window) for k in key_ids] + [{"pk": f"KEY#{k}"} for k in key_ids]
        loads: dict[str, BucketLoad] = {}
        cooling: dict[str, float] = {}
        for item in self._table.batch_get(keys):
            kind, kid = str(item["pk"]).split("#")[:2]
            if kind == "BUCKET":
                loads[kid] = BucketLoad(int(item.get("requests", 0)), int(item.get("tokens", 0)))
            elif kind == "KEY":
                cooling[kid] = float(item.get("cooldown_until", 0))
        return loads, cooling

    def take(
        self, key_id: str, window: int, tokens: int, *, rpm: int, tpm: int, expires_at: int
    ) -> bool:
        try:
            self._table.update(
                _bucket_key(key_id, window),
                "ADD requests :one, tokens :t SET expires_at = :e",
                condition="attribute_not_exists(requests) OR (requests < :rpm AND tokens <= :room)",
                values={
                    ":one": 1,
                    ":t": tokens,
                    ":rpm": rpm,
                    ":room": tpm - tokens,
                    ":e": expires_at,
                },
                returns="NONE",
            )
        except ddb.ConditionFailed:
            return False
        return True

    def add_tokens(self, key_id: str, window: int, delta: int) -> None:
        self._table.update(
            _bucket_key(key_id, window), "ADD tokens :d", values={":d": delta}, returns="NONE"
        )

    def untake(self, key_id: str, window: int, tokens: int) -> None:
        self._table.update(
            _bucket_key(key_id, window),
            "ADD requests :r, tokens :t",
            values={":r": -1, ":t": -tokens},
            returns="NONE",
        )

    def cool_down(self, key_id: str, until: float, *, expires_at: int) -> None:
        self._table.update(
            {"pk": f"KEY#{key_id}"},
            "SET cooldown_until = :u, expires_at = :e",
            values={":u": until, ":e": expires_at},
            returns="NONE",
        )


class DynamoBudgetStore:
    """Budget items ``<scope key>`` and tenants' limits ``LIMITS#<tenant>`` (budgets table)."""

    def __init__(self, table: ddb.Table) -> None:
        self._table = table

    def tenant_limits(self, tenant_id: str) -> dict[str, Any]:
        return self._table.get({"pk": f"LIMITS#{tenant_id}"}, consistent=False) or {}

    def set_tenant_limits(self, tenant_id: str, limits: Mapping[str, Any]) -> None:
        sets = {"tenant_id": tenant_id, **{k: v for k, v in limits.items() if v is not None}}
        names = {f"#a{i}": name for i, name in enumerate(sets)}
        self._table.update(
            {"pk": f"LIMITS#{tenant_id}"},
            "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(sets))),
            names=names,
            values={f":a{i}": value for i, value in enumerate(sets.values())},
            returns="NONE",
        )

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
        # One conditional write records the entry and adds to committed: no extra trip.
        try:
            new = self._table.update(
                {"pk": key},
                "SET #r = :entry, limit_nusd = :limit, "
                "expires_at = if_not_exists(expires_at, :exp) ADD committed :r, open_n :one",
                condition="(attribute_not_exists(committed) OR committed <= :room) "
                "AND (attribute_not_exists(open_n) OR open_n < :max) "
                f"AND attribute_not_exists({CLOSED_ATTR})",
                names={"#r": OPEN_PREFIX + rid},
                values={
                    ":entry": {"a": amount, "x": hold_until},
                    ":r": amount,
                    ":one": 1,
                    ":room": room,
                    ":max": max_open,
                    ":limit": limit,
                    ":exp": expires_at,
                },
                returns="UPDATED_NEW",
                return_old_on_failure=True,  # the refusal brings the item for free
            )
        except ddb.ConditionFailed as refused:
            return budget_item(refused.item or {})
        return int(new.get("committed", 0))

    def close(self, key: str, *, now: int, expires_at: int) -> BudgetItem:
        new = self._table.update(
            {"pk": key},
            f"SET {CLOSED_ATTR} = if_not_exists({CLOSED_ATTR}, :now), "
            "expires_at = if_not_exists(expires_at, :exp)",
            values={":now": now, ":exp": expires_at},
            returns="ALL_NEW",
        )
        return budget_item(new)

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
        adds = ["committed :d", "open_n :minus"]
        names: dict[str, str] = {"#r": OPEN_PREFIX + rid}
        values: dict[str, Any] = {":d": actual - reserved, ":minus": -1}
        if actual or calls:
            adds += ["spent :a", "calls :n"]
            values.update({":a": actual, ":n": calls})
        _usage_terms(usage, adds, names, values)
        try:
            new = self._table.update(
                {"pk": key},
                "REMOVE #r ADD " + ", ".join(adds),
                condition="attribute_exists(#r)",
                names=names,
                values=values,
                returns="UPDATED_NEW",
            )
        except ddb.ConditionFailed:
            return None
        return int(new.get("spent", 0))

    def record_late(
        self, key: str, actual: int, calls: int, *, usage: UsageAdd | None = None
    ) -> int:
        adds = ["committed :a", "spent :a", "calls :n"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {":a": actual, ":n": calls}
        _usage_terms(usage, adds, names, values)
        new = self._table.update(
            {"pk": key},
            "ADD " + ", ".join(adds),
            names=names,
            values=values,
            returns="UPDATED_NEW",
        )
        return int(new.get("spent", 0))

    def add_usage(self, key: str, usage: UsageAdd, *, expires_at: int) -> None:
        adds: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {":exp": expires_at}
        _usage_terms(usage, adds, names, values)
        if not adds:
            return
        self._table.update(
            {"pk": key},
            "SET expires_at = if_not_exists(expires_at, :exp) ADD " + ", ".join(adds),
            names=names,
            values=values,
            returns="NONE",
        )

    def give_back(self, key: str, entries: Sequence[OpenReservation]) -> list[OpenReservation]:
        released: list[OpenReservation] = []
        for offset in range(0, len(entries), GIVE_BACK_BATCH):
            batch = list(entries[offset : offset + GIVE_BACK_BATCH])
            if len(batch) > 1 and self._give_back(key, batch):
                released.extend(batch)
                continue
            # One of them was closed meanwhile (or a batch of one): entry by entry.
            released.extend(entry for entry in batch if self._give_back(key, [entry]))
        return released

    def _give_back(self, key: str, entries: Sequence[OpenReservation]) -> bool:
        names = {f"#r{i}": OPEN_PREFIX + e.rid for i, e in enumerate(entries)}
        try:
            self._table.update(
                {"pk": key},
                f"REMOVE {', '.join(names)} ADD committed :d, open_n :n",
                condition=" AND ".join(f"attribute_exists({n})" for n in names),
                names=names,
                values={":d": -sum(e.amount for e in entries), ":n": -len(entries)},
                returns="NONE",
            )
        except ddb.ConditionFailed:
            return False
        return True

    def read(self, keys: Sequence[str]) -> dict[str, BudgetItem]:
        items = self._table.batch_get([{"pk": k} for k in dict.fromkeys(keys)])
        return {str(item["pk"]): budget_item(item) for item in items}

    def mark_exhausted(self, key: str) -> int | None:
        try:
            new = self._table.update(
                {"pk": key},
                "SET exhausted_alerted = :t",
                condition="attribute_not_exists(exhausted_alerted)",
                values={":t": True},
                returns="ALL_NEW",
            )
        except ddb.ConditionFailed:
            return None
        return int(new.get("spent", 0))


def _usage_terms(
    usage: UsageAdd | None, adds: list[str], names: dict[str, str], values: dict[str, Any]
) -> None:
    """Append ``ADD`` terms for the usage counters (names and values placeholders only:
    a member name can hold any character)."""
    if usage is None:
        return
    for i, (counter, value) in enumerate(usage.nonzero()):
        names[f"#u{i}"] = usage_attribute(counter, usage.member)
        values[f":u{i}"] = value
        adds.append(f"#u{i} :u{i}")


class DynamoCompletionRecords:
    """``pk`` -> ``completion`` (JSON text) and ``expires_at`` (ledger table)."""

    def __init__(self, table: ddb.Table) -> None:
        self._table = table

    def get(self, key: str) -> StoredCompletion | None:
        item = self._table.get({"pk": key})
        if not item:
            return None
        return StoredCompletion(str(item["completion"]), int(item.get("expires_at", 0)))

    def put_if_absent(self, key: str, completion: str, *, expires_at: int, now: int) -> bool:
        try:
            self._table.put(
                {"pk": key, "completion": completion, "expires_at": expires_at},
                # An expired entry that TTL has not removed yet is replaced.
                condition="attribute_not_exists(pk) OR expires_at < :now",
                values={":now": now},
            )
        except ddb.ConditionFailed:
            return False
        return True


class DynamoRollupStore:
    """Counter rows ``(pk, sk)`` of the usage table, added to with ``ADD``."""

    def __init__(self, table: ddb.Table) -> None:
        self._table = table

    def add(self, pk: str, sk: str, counts: Mapping[str, int], *, expires_at: int) -> None:
        names = list(counts)
        self._table.update(
            {"pk": pk, "sk": sk},
            f"ADD {', '.join(f'{n} :{n}' for n in names)} SET expires_at = :exp",
            values={**{f":{n}": counts[n] for n in names}, ":exp": expires_at},
            returns="NONE",
        )

    def rows(self, pk: str) -> list[dict[str, Any]]:
        return list(self._table.query_all("pk = :pk", values={":pk": pk}))

    def row(self, pk: str, sk: str) -> dict[str, Any]:
        return self._table.get({"pk": pk, "sk": sk}) or {}

""":class:`stratus.reviews.ReviewStore` on the reviews table (``stratus.ddb.Table``).

``pk = T#<tenant>``; a review is ``sk = R#<review id>``, an aggregate
``sk = S#<agent>#<release>``. Every read is scoped to the caller's partition, so
a review id of another tenant is simply not found.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from stratus.ddb import Table, Transaction, TransactionCancelled
from stratus.reviews import MAX_PAGES, Item

_NAMES = {
    "#st": "status",
    "#sc": "score",
    "#cm": "comment",
    "#at": "reviewed_at",
}


def _pk(tenant_id: str) -> str:
    return f"T#{tenant_id}"


def _plain(item: Mapping[str, Any]) -> Item:
    return {k: v for k, v in item.items() if k not in ("pk", "sk")}


class DynamoReviewStore:
    def __init__(self, table: Table) -> None:
        self._table = table

    def put_new(self, item: Mapping[str, Any]) -> None:
        self._table.put(
            {"pk": _pk(item["tenant_id"]), "sk": f"R#{item['review_id']}", **item},
            condition="attribute_not_exists(pk)",
        )

    def get(self, tenant_id: str, review_id: str) -> Item | None:
        item = self._table.get({"pk": _pk(tenant_id), "sk": f"R#{review_id}"})
        return _plain(item) if item else None

    def page(
        self,
        tenant_id: str,
        *,
        status: str | None,
        agent: str | None,
        limit: int,
        after: str | None,
    ) -> tuple[list[Item], str | None]:
        names: dict[str, str] = {}
        values: dict[str, Any] = {":p": _pk(tenant_id), ":r": "R#"}
        filters: list[str] = []
        if status is not None:
            names["#st"], values[":st"] = "status", status
            filters.append("#st = :st")
        if agent is not None:
            names["#ag"], values[":ag"] = "agent", agent
            filters.append("#ag = :ag")
        start: dict[str, Any] | None = {"pk": _pk(tenant_id), "sk": f"R#{after}"} if after else None
        # Without a filter, limit + 1 items tell whether another page exists.
        evaluated = 100 if filters else limit + 1
        found: list[Item] = []
        for _ in range(MAX_PAGES):
            page = self._table.query(
                "pk = :p AND begins_with(sk, :r)",
                names=names or None,
                values=values,
                filter=" AND ".join(filters) or None,
                forward=False,
                limit=evaluated,
                start=start,
            )
            for item in page.items:
                if len(found) == limit:
                    return found, found[-1]["review_id"]
                found.append(_plain(item))
            if page.last_key is None:
                return found, None
            start = page.last_key
        # Out of queries for this page: continue after the last item evaluated.
        assert start is not None
        return found, str(start["sk"]).removeprefix("R#")

    def grade(
        self, review: Mapping[str, Any], *, score: Decimal, comment: str, reviewed_at: str
    ) -> bool:
        pk = _pk(review["tenant_id"])
        agent, release = review["agent"], review["release"]
        transaction = Transaction()
        transaction.add(
            self._table.update_op(
                {"pk": pk, "sk": f"R#{review['review_id']}"},
                "SET #st = :reviewed, #sc = :s, #cm = :c, #at = :at",
                condition="attribute_exists(pk) AND #st = :pending",
                names=_NAMES,
                values={
                    ":reviewed": "reviewed",
                    ":pending": "pending",
                    ":s": score,
                    ":c": comment,
                    ":at": reviewed_at,
                },
            )
        )
        transaction.add(
            self._table.update_op(
                {"pk": pk, "sk": f"S#{agent}#{release}"},
                "ADD score_sum :s, reviewed :one SET #ag = :ag, #rl = :rl",
                names={"#ag": "agent", "#rl": "release"},
                values={":s": score, ":one": 1, ":ag": agent, ":rl": release},
            )
        )
        try:
            self._table.transact(transaction)
        except TransactionCancelled as exc:
            if exc.condition_failed_at(0):
                return False
            raise
        return True

    def scores(self, tenant_id: str, agent: str | None = None) -> list[Item]:
        prefix = f"S#{agent}#" if agent else "S#"
        return [
            _plain(item)
            for item in self._table.query_all(
                "pk = :p AND begins_with(sk, :s)",
                values={":p": _pk(tenant_id), ":s": prefix},
            )
        ]

    def score(self, tenant_id: str, agent: str, release: str) -> Item | None:
        item = self._table.get({"pk": _pk(tenant_id), "sk": f"S#{agent}#{release}"})
        return _plain(item) if item else None

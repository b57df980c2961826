""":class:`stratus.audit.AuditStore` on the audit table (``stratus.ddb.Table``).

``pk = T#<tenant>``, ``sk = <event id>`` (time-sortable: 13 hex digits of epoch
milliseconds first, :func:`stratus.audit.new_event_id`), so a tenant's events
query oldest first, from ``since``, in one partition: another tenant's events are
never in reach. Every item carries ``expires_at`` (TTL: the stage's retention).

DynamoDB round trips: :meth:`put_events` 1 ``BatchWriteItem`` for up to 25 events
(unprocessed items, rare, are written again after a short backoff); :meth:`events`
1 ``Query`` (more only when a ``type`` filter skips items, at most
:data:`MAX_QUERIES`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from stratus.audit import AuditEvent, since_key
from stratus.ddb import Table, marshal

#: Queries one listing may make to fill a page when the type filter skips items.
MAX_QUERIES = 4
#: Items one query evaluates when a type filter is on.
FILTERED_PAGE = 200
_ATTEMPTS = 5


def _pk(tenant_id: str) -> str:
    return f"T#{tenant_id}"


def _plain(value: Any) -> Any:
    """DynamoDB numbers back to int/float, recursively (details are JSON)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _event(item: Mapping[str, Any]) -> AuditEvent:
    return AuditEvent(
        tenant_id=str(item["tenant_id"]),
        type=str(item["type"]),
        at=float(item["at"]),
        actor=str(item.get("actor", "system")),
        request_id=item.get("request_id"),
        details=_plain(item.get("details") or {}),
        event_id=str(item["sk"]),
    )


class DynamoAuditStore:
    def __init__(
        self,
        table: Table,
        *,
        retention_days: int = 365,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table
        self._retention_s = retention_days * 86_400
        self._sleep = sleep

    def item(self, event: AuditEvent) -> dict[str, Any]:
        return {
            "pk": _pk(event.tenant_id),
            "sk": event.event_id,
            "tenant_id": event.tenant_id,
            "type": event.type,
            "at": event.at,
            "actor": event.actor,
            "request_id": event.request_id,
            "details": dict(event.details),
            "expires_at": int(event.at) + self._retention_s,
        }

    def put_events(self, events: Sequence[AuditEvent]) -> None:
        client, name = self._table.client, self._table.name
        for offset in range(0, len(events), 25):
            requests = [
                {"PutRequest": {"Item": marshal(self.item(e))}}
                for e in events[offset : offset + 25]
            ]
            for attempt in range(_ATTEMPTS):
                reply = client.batch_write_item(RequestItems={name: requests})
                requests = reply.get("UnprocessedItems", {}).get(name, [])
                if not requests:
                    break
                self._sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError(f"{len(requests)} audit events left unprocessed in {name}")

    def events(
        self,
        tenant_id: str,
        *,
        since: float | None = None,
        types: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[AuditEvent], str | None]:
        values: dict[str, Any] = {":p": _pk(tenant_id)}
        lower = since_key(since) if since is not None else ""
        if cursor is not None and cursor >= lower:
            condition, values[":lo"] = "pk = :p AND sk > :lo", cursor
        elif lower:
            condition, values[":lo"] = "pk = :p AND sk >= :lo", lower
        else:
            condition = "pk = :p"
        names: dict[str, str] | None = None
        filter_expression: str | None = None
        if types:
            names = {"#ty": "type"}
            for i, kind in enumerate(types):
                values[f":t{i}"] = kind
            filter_expression = f"#ty IN ({', '.join(f':t{i}' for i in range(len(types)))})"
        found: list[AuditEvent] = []
        start: dict[str, Any] | None = None
        for _ in range(MAX_QUERIES):
            page = self._table.query(
                condition,
                names=names,
                values=values,
                filter=filter_expression,
                consistent=False,
                limit=FILTERED_PAGE if types else limit + 1,
                start=start,
            )
            for item in page.items:
                if len(found) == limit:
                    return found, found[-1].event_id
                found.append(_event(item))
            if page.last_key is None:
                return found, None
            start = page.last_key
        # Out of queries: the next page continues after the last item evaluated.
        assert start is not None
        return found, str(start["sk"])

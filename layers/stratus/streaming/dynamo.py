"""The DynamoDB adapter of :class:`stratus.streaming.store.StreamStore` (``stratus.ddb``).

Round trips: every method is one request. ``claim`` is one conditional PutItem (on a
refusal the old item comes back with the failure: no second read); ``take_ticket`` one
conditional DeleteItem returning the old item.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from stratus.ddb import ConditionFailed, Table, unmarshal
from stratus.streaming.store import (
    CONNECTION_TTL_S,
    FRAME_TTL_S,
    Claim,
    StreamCaller,
)


class DynamoStreamStore:
    def __init__(self, table: Table) -> None:
        self._table = table

    def put_connection(self, connection_id: str, caller: StreamCaller, now: float) -> None:
        self._table.put(
            {
                "pk": f"CONN#{connection_id}",
                **caller.item(),
                "connected_at": int(now),
                "expires_at": int(now) + CONNECTION_TTL_S,
            }
        )

    def get_connection(self, connection_id: str) -> StreamCaller | None:
        item = self._table.get({"pk": f"CONN#{connection_id}"})
        return StreamCaller.from_item(item) if item else None

    def delete_connection(self, connection_id: str) -> None:
        self._table.delete({"pk": f"CONN#{connection_id}"})

    def put_ticket(self, ticket_hash: str, caller: StreamCaller, expires_at: int) -> None:
        self._table.put(
            {"pk": f"TICKET#{ticket_hash}", **caller.item(), "expires_at": expires_at},
            condition="attribute_not_exists(pk)",
        )

    def take_ticket(self, ticket_hash: str, now: float) -> StreamCaller | None:
        """One conditional delete: only an existing, unexpired ticket; its old item back."""
        args = self._table.delete_op(
            {"pk": f"TICKET#{ticket_hash}"},
            condition="attribute_exists(pk) AND expires_at > :now",
            values={":now": int(now)},
        )["Delete"]
        try:
            response = Table._write(
                self._table.client.delete_item, {**args, "ReturnValues": "ALL_OLD"}
            )
        except ConditionFailed:
            return None
        item = unmarshal(response.get("Attributes"))
        return StreamCaller.from_item(item) if item else None

    def claim(self, key: str, now: float, lease_s: int) -> Claim:
        try:
            self._table.put(
                {
                    "pk": key,
                    "status": "running",
                    "lease_until": int(now) + lease_s,
                    "expires_at": int(now) + FRAME_TTL_S,
                },
                # New, expired (TTL not swept yet), or a running claim whose lease ran out.
                condition="attribute_not_exists(pk) OR expires_at <= :now "
                "OR (#s = :running AND lease_until <= :now)",
                names={"#s": "status"},
                values={":now": int(now), ":running": "running"},
                return_old_on_failure=True,
            )
        except ConditionFailed as refused:
            old: dict[str, Any] = refused.item or {}
            if old.get("status") == "done":
                return Claim("done", json.loads(old.get("frame") or "{}"))
            return Claim("running")
        return Claim("new")

    def finish(self, key: str, frame: dict[str, Any], now: float) -> None:
        self._table.put(
            {
                "pk": key,
                "status": "done",
                "frame": json.dumps(frame, separators=(",", ":")),  # exact: no Decimals back
                "expires_at": int(now) + FRAME_TTL_S,
            }
        )

    def release(self, key: str) -> None:
        with contextlib.suppress(ConditionFailed):  # finished meanwhile: keep the final frame
            self._table.delete(
                {"pk": key},
                condition="#s = :running",
                names={"#s": "status"},
                values={":running": "running"},
            )

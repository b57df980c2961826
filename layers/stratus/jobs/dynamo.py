"""DynamoJobStore: the :class:`~stratus.jobs.store.JobStore` port on the jobs table."""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from stratus import ddb
from stratus.jobs.contracts import JOB_SK, STEP_PREFIX, Clock, now_iso
from stratus.jobs.store import (
    LEASE_INDEX,
    LEASE_SHARD,
    LEASE_SHARDS,
    Item,
    JobItems,
    counter_key,
    lease_shard,
    output_of,
)
from stratus.observability import logger
from stratus.tenant_limits import too_many_jobs
from stratus.usage import Usage


class DynamoJobStore(JobItems):
    """The jobs table through :class:`stratus.ddb.Table`; every transition a conditional write."""

    def __init__(
        self, table: ddb.Table, *, retention_days: int = 30, clock: Clock = time.time
    ) -> None:
        super().__init__(retention_days=retention_days, clock=clock)
        self.table = table

    def _put_new(self, item: Item, max_queued: int | None = None) -> bool:
        # One transaction: the job and its tenant's counter (conditional on the cap).
        capped = max_queued is not None
        count = self.table.update_op(
            counter_key(item["tenant_id"]),
            "ADD #q :one",
            condition="attribute_not_exists(#q) OR #q < :cap" if capped else None,
            names={"#q": "queued"},
            values={":one": 1} | ({":cap": max_queued} if capped else {}),
        )
        put = self.table.put_op(item, condition="attribute_not_exists(job_id)")
        try:
            self.table.transact([put, count])
        except ddb.TransactionCancelled as exc:
            if exc.condition_failed_at(0):
                return False
            if exc.condition_failed_at(1) and max_queued is not None:
                raise too_many_jobs(max_queued, self.queued_count(item["tenant_id"])) from None
            raise
        return True

    def queued_count(self, tenant_id: str) -> int:
        counter = self.table.get(counter_key(tenant_id)) or {}
        return int(counter.get("queued", 0))

    def _set_final(
        self,
        job_id: str,
        allowed: list[str],
        fields: Item,
        *,
        lease_is: Any = None,
        known: Mapping[str, Any] | None = None,
    ) -> Item | None:
        # Whether the job is counted, and its tenant, never change after it is created:
        # the caller's copy spares a read (the write's condition checks ``counted`` too).
        fixed = known is not None and known.get("job_id") == job_id and "tenant_id" in known
        job = known if fixed else self.get(job_id)
        if job is None:
            return None
        if not job.get("counted"):  # made before the counter: nothing to take from it
            return self._set_if_status(job_id, allowed, fields, lease_is=lease_is, counted=False)
        condition = " OR ".join(f"#status = :from{i}" for i in range(len(allowed)))
        values: dict[str, Any] = {f":from{i}": s for i, s in enumerate(allowed)}
        if lease_is is not None:
            condition = f"({condition}) AND lease_until = :seen_lease"
            values[":seen_lease"] = lease_is
        every = {**fields, "updated_at": now_iso(self.clock)}
        kept = {k: v for k, v in every.items() if v is not None}
        removed = [k for k, v in every.items() if v is None]
        expression = "SET " + ", ".join(f"#{k} = :{k}" for k in kept)
        if removed:
            expression += " REMOVE " + ", ".join(f"#{k}" for k in removed)
        finish = self.table.update_op(
            {"job_id": job_id, "sk": JOB_SK},
            expression,
            condition=f"attribute_exists(job_id) AND #counted = :yes AND ({condition})",
            names={f"#{k}": k for k in every} | {"#status": "status", "#counted": "counted"},
            values={f":{k}": v for k, v in kept.items()} | values | {":yes": True},
        )
        uncount = self.table.update_op(
            counter_key(job["tenant_id"]),
            "ADD #q :minus",
            names={"#q": "queued"},
            values={":minus": -1},
        )
        try:
            self.table.transact([finish, uncount])
        except ddb.TransactionCancelled as exc:
            if exc.condition_failed_at(0):
                return None  # another writer finished it first (or its lease changed)
            raise
        return self.table.get({"job_id": job_id, "sk": JOB_SK})

    def get(self, job_id: str) -> Item | None:
        return self.table.get({"job_id": job_id, "sk": JOB_SK})

    def steps(self, job_id: str) -> list[Item]:
        return list(
            self.table.query_all(
                "job_id = :id AND begins_with(sk, :prefix)",
                values={":id": job_id, ":prefix": STEP_PREFIX},
            )
        )

    def _update(
        self,
        job_id: str,
        *,
        set_: Mapping[str, Any],
        condition: str,
        values: Mapping[str, Any],
        add: Mapping[str, Any] | None = None,
    ) -> Item | None:
        """SET (REMOVE the None ones, and ADD) the fields if ``condition`` holds; the new
        item, or None."""
        every = {**set_, "updated_at": now_iso(self.clock)}
        fields = {k: v for k, v in every.items() if v is not None}
        removed = [k for k, v in every.items() if v is None]
        names = {f"#{k}": k for k in [*every, *(add or {})]}
        names["#status"] = "status"
        expression = "SET " + ", ".join(f"#{k} = :{k}" for k in fields)
        if removed:
            expression += " REMOVE " + ", ".join(f"#{k}" for k in removed)
        if add:
            expression += " ADD " + ", ".join(f"#{k} :{k}" for k in add)
        attr_values = {f":{k}": v for k, v in {**fields, **(add or {})}.items()} | dict(values)
        try:
            return self.table.update(
                {"job_id": job_id, "sk": JOB_SK},
                expression,
                condition=f"attribute_exists(job_id) AND ({condition})",
                names=names,
                values=attr_values,
            )
        except ddb.ConditionFailed:
            return None

    def claim(
        self, job_id: str, lease_s: float, fields: Mapping[str, Any] | None = None
    ) -> Item | None:
        now = Decimal(str(round(self.clock(), 3)))
        return self._update(
            job_id,
            set_={
                **(fields or {}),
                "status": "running",
                "lease_until": now + Decimal(str(round(lease_s, 3))),
                LEASE_SHARD: lease_shard(job_id),
            },
            add={"attempts": 1},
            condition="#status = :queued OR (#status = :running AND lease_until < :now)",
            values={":queued": "queued", ":running": "running", ":now": now},
        )

    def _set_if_status(
        self,
        job_id: str,
        allowed: list[str],
        fields: Item,
        *,
        lease_is: Any = None,
        add: Mapping[str, int] | None = None,
        counted: bool | None = None,
    ) -> Item | None:
        condition = " OR ".join(f"#status = :from{i}" for i in range(len(allowed)))
        values: dict[str, Any] = {f":from{i}": s for i, s in enumerate(allowed)}
        if lease_is is not None:
            condition = f"({condition}) AND lease_until = :seen_lease"
            values[":seen_lease"] = lease_is
        if counted is False:
            condition = f"({condition}) AND attribute_not_exists(counted)"
        return self._update(job_id, set_=fields, condition=condition, values=values, add=add)

    def expired_leases(self, before: float, limit: int = 100) -> list[Item]:
        found: list[Item] = []
        cutoff = Decimal(str(round(before, 3)))
        for shard in range(LEASE_SHARDS):
            page = self.table.query(
                f"{LEASE_SHARD} = :shard AND lease_until < :before",
                values={":shard": f"L{shard}", ":before": cutoff},
                index=LEASE_INDEX,
                limit=limit,
            )
            found.extend(page.items)
        return found[:limit]

    def record_callback(
        self, job_id: str, status: Mapping[str, Any], *, only_new: bool = False
    ) -> bool:
        condition = "attribute_exists(job_id)"
        if only_new:
            condition += " AND attribute_not_exists(#callback)"
        try:
            self.table.update(
                {"job_id": job_id, "sk": JOB_SK},
                "SET #callback = :callback",
                condition=condition,
                names={"#callback": "callback"},
                values={":callback": dict(status)},
                returns="NONE",
            )
        except ddb.ConditionFailed:
            return False
        return True

    def mark_notified(self, job_id: str) -> None:
        self._update(
            job_id, set_={"notified": True}, condition="attribute_exists(#status)", values={}
        )

    def _add_step(self, job_id: str, step_item: Item, usage: Usage, cost_usd: Decimal) -> bool:
        add_usage = self.table.update_op(
            {"job_id": job_id, "sk": JOB_SK},
            "ADD cost_usd :cost, input_tokens :in, cached_input_tokens :ca, "
            "output_tokens :out, reasoning_tokens :re SET updated_at = :now",
            condition="attribute_exists(job_id)",
            values={
                ":cost": cost_usd,
                ":in": usage.input_tokens,
                ":ca": usage.cached_input_tokens,
                ":out": usage.output_tokens,
                ":re": usage.reasoning_tokens,
                ":now": step_item["updated_at"],
            },
        )
        put_step = self.table.put_op(step_item, condition="attribute_not_exists(sk)")
        try:
            self.table.transact([put_step, add_usage])
        except ddb.TransactionCancelled as exc:
            if not exc.any_condition_failed:
                raise
            step = str(step_item["sk"]).removeprefix(STEP_PREFIX)
            logger.info("step already recorded", extra={"job_id": job_id, "step": step})
            return False
        return True

    def step_output(self, job_id: str, step: str) -> Any:
        return output_of(self.table.get({"job_id": job_id, "sk": STEP_PREFIX + step}))

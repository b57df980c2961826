"""The job store port, and what both of its adapters share (item shapes, transitions).

A job is one item (``sk = JOB``) plus one item per step (``sk = STEP#<name>``),
so no item grows with the work done. Every state change is conditional:

* ``claim``: ``queued -> running`` under a lease (``lease_until``), or a takeover
  of a running job whose lease expired; ``attempts`` counts the claims;
* ``record_step``: the step item and the job's usage and cost are written
  together, once; a step recorded before adds nothing;
* ``finish``: an active job moves to a final status once; the writer that won
  gets the new item, every other one gets ``None``.

Adapters: :class:`stratus.jobs.dynamo.DynamoJobStore` (DynamoDB) and
:class:`stratus.jobs.memory.MemoryJobStore` (in process, unit tests); the
contract tests run the same suite against both.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from stratus.errors import IdempotencyKeyReused
from stratus.jobs.contracts import (
    JOB_SK,
    STEP_PREFIX,
    Clock,
    FinalStatus,
    JobRequest,
    dump_json,
    now_iso,
    request_hash,
)
from stratus.usage import Usage

Item = dict[str, Any]
#: The statuses a job may be finished from by default (the worker and the workflow).
RUNNING_STATUSES = ("running", "waiting_approval")
#: The sparse index of leased jobs: ``lease_shard`` exists only while a worker's lease
#: (or a sweep's re-queue hold) is on the job, so the sweep never scans the table.
LEASE_INDEX = "leases"
LEASE_SHARD = "lease_shard"
LEASE_SHARDS = 4
#: A JSON result or step output stored larger than this is replaced by a truncated
#: preview (``{"truncated": true, "bytes": n, "preview": "..."}``): with the input cap
#: at submission (``job_max_input_bytes``) no job item can reach DynamoDB's 400 KB.
MAX_STORED_JSON_BYTES = 96 * 1024
#: Set in ``fields`` of a transition: the attribute is removed.
REMOVE: Any = None
#: The tenant's count of jobs queued or running (``job_id = QUEUED#<tenant>``, this sk):
#: added to in the transaction that creates a job, taken from in the one that finishes
#: it (only jobs marked ``counted``: those created since the count exists).
COUNTER_SK = "QUEUED"


def counter_key(tenant_id: str) -> dict[str, str]:
    return {"job_id": f"QUEUED#{tenant_id}", "sk": COUNTER_SK}


def capped_json(value: Any, limit: int = MAX_STORED_JSON_BYTES) -> str:
    """:func:`dump_json`, or a truncated preview object if it is over ``limit`` bytes."""
    text = dump_json(value)
    size = len(text.encode())
    if size <= limit:
        return text
    preview = text.encode()[: max(0, limit - 1024)].decode(errors="ignore")
    return dump_json({"truncated": True, "bytes": size, "preview": preview})


def lease_shard(job_id: str) -> str:
    """The lease index partition of a job (spreads the index over a few partitions)."""
    digest = hashlib.sha256(job_id.encode()).digest()
    return f"L{digest[0] % LEASE_SHARDS}"


class JobStore(Protocol):
    """The jobs table: reads, and conditional transitions (None/False: it did not hold)."""

    #: The store's clock (leases are compared with it).
    clock: Clock

    def create(
        self,
        *,
        job_id: str,
        tenant_id: str,
        request: JobRequest,
        source: str,
        idempotency_key: str | None = None,
        parent_job_id: str | None = None,
        max_queued: int | None = None,
        caller: str | None = None,
        correlation_id: str | None = None,
    ) -> tuple[Item, bool]:
        """Put a new queued job, or return the existing one of that id (``created=False``).

        The same id with another request raises :class:`IdempotencyKeyReused`; a new job
        while the tenant has ``max_queued`` queued or running raises ``TooManyJobs``.
        """
        ...

    def queued_count(self, tenant_id: str) -> int:
        """The tenant's jobs queued or running (the counter)."""
        ...

    def get(self, job_id: str) -> Item | None: ...

    def steps(self, job_id: str) -> list[Item]:
        """The job's step items, in key order."""
        ...

    def claim(
        self, job_id: str, lease_s: float, fields: Mapping[str, Any] | None = None
    ) -> Item | None:
        """queued -> running under a lease, or take over a running job whose lease expired;
        ``fields`` are set in the same write (the worker's ``release``, ``prompt_version``)."""
        ...

    def release(self, job_id: str, hold_s: float = 0) -> None:
        """Shorten the lease of a running job to ``hold_s`` from now (its retry's backoff),
        so that the redelivery after that backoff may claim it."""
        ...

    def expired_leases(self, before: float, limit: int = 100) -> list[Item]:
        """Jobs whose lease (or re-queue hold) ended before ``before`` (the lease index)."""
        ...

    def requeue_expired(self, job_id: str, seen_lease: Any, hold_s: float) -> Item | None:
        """An expired job back to ``queued`` (held ``hold_s``, ``sweeps`` + 1), if its lease
        is still the one the sweep saw; None if a worker took it meanwhile."""
        ...

    def expire(self, job_id: str, seen_lease: Any, error: Mapping[str, Any]) -> Item | None:
        """Fail an expired job (its lease still the one seen); the new item, or None."""
        ...

    def set_execution(self, job_id: str, execution_arn: str) -> Item | None:
        """Record a running job's workflow execution (and drop its lease)."""
        ...

    def await_approval(self, job_id: str, task_token: str) -> Item | None:
        """running -> waiting_approval, keeping the task token."""
        ...

    def answer_approval(
        self, job_id: str, approved: bool, comment: str, by: str | None = None
    ) -> Item | None:
        """waiting_approval -> running, once: only one answer reaches the workflow."""
        ...

    def finish(
        self,
        job_id: str,
        status: FinalStatus,
        *,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        from_statuses: Iterable[str] = RUNNING_STATUSES,
        known: Mapping[str, Any] | None = None,
    ) -> Item | None:
        """Move a job in ``from_statuses`` to a final status; None if it was not in them.
        ``known``: the job as the caller read it; its tenant and whether it is counted
        are fixed at creation, so an adapter may skip reading them again."""
        ...

    def mark_notified(self, job_id: str) -> None: ...

    def record_callback(
        self, job_id: str, status: Mapping[str, Any], *, only_new: bool = False
    ) -> bool:
        """Set the job's ``callback`` delivery status (``only_new``: unless it has one)."""
        ...

    def record_step(
        self,
        job_id: str,
        step: str,
        *,
        usage: Usage,
        cost_usd: Decimal,
        model: str | None = None,
        output: Any = None,
    ) -> bool:
        """Record a finished step and add its usage and cost to the job; False if recorded."""
        ...

    def step_output(self, job_id: str, step: str) -> Any:
        """The recorded output of a step, or None."""
        ...


# -- what the adapters share ----------------------------------------------------------


class JobItems:
    """The part of a job store its adapters share: item shapes, retention, the clock,
    and every transition that is "set these fields if the status is one of these".

    Subclasses provide the conditional writes: :meth:`_put_new`, :meth:`_add_step`,
    :meth:`_set_if_status` (plus ``get``, ``steps``, ``claim``, ``mark_notified``,
    ``step_output``).
    """

    #: A new job is in the sweep's lease index until a worker claims it, for this long: a
    #: job whose queue message never arrived (its sender died after recording it) is
    #: re-sent by the sweep instead of staying queued forever. The root sets it from
    #: ``job_sweep_hold_s``.
    queued_hold_s: float = 300.0

    def __init__(self, *, retention_days: int = 30, clock: Clock = time.time) -> None:
        self.retention_s = retention_days * 24 * 3600
        self.clock = clock

    def _expires(self) -> int:
        return int(self.clock()) + self.retention_s

    def get(self, job_id: str) -> Item | None:
        raise NotImplementedError

    def _put_new(self, item: Item, max_queued: int | None = None) -> bool:
        """Write ``item`` and add one to its tenant's counter, unless its job id exists
        (False) or the counter is at ``max_queued`` (``TooManyJobs``), atomically."""
        raise NotImplementedError

    def _set_final(
        self,
        job_id: str,
        allowed: list[str],
        fields: Item,
        *,
        lease_is: Any = None,
        known: Mapping[str, Any] | None = None,
    ) -> Item | None:
        """:meth:`_set_if_status` to a final status, taking one from the tenant's counter
        in the same atomic write when the job is ``counted``; the new item, or None.
        ``known``: the job as the caller read it (its ``tenant_id`` and ``counted``)."""
        raise NotImplementedError

    def _add_step(self, job_id: str, step_item: Item, usage: Usage, cost_usd: Decimal) -> bool:
        """Write the step and add its usage and cost to the job, unless the step exists
        or the job does not; False then."""
        raise NotImplementedError

    def _set_if_status(
        self,
        job_id: str,
        allowed: list[str],
        fields: Item,
        *,
        lease_is: Any = None,
        add: Mapping[str, int] | None = None,
    ) -> Item | None:
        """Set ``fields`` (``REMOVE`` values remove) and add ``add`` if the job's status is
        one of ``allowed`` (and its ``lease_until`` is ``lease_is``, if given); the new
        item, or None."""
        raise NotImplementedError

    def _now(self) -> Decimal:
        return Decimal(str(round(self.clock(), 3)))

    def release(self, job_id: str, hold_s: float = 0) -> None:
        until = self._now() + Decimal(str(round(hold_s, 3))) if hold_s > 0 else 0
        self._set_if_status(job_id, ["running"], {"lease_until": until})

    def requeue_expired(self, job_id: str, seen_lease: Any, hold_s: float) -> Item | None:
        fields = {
            "status": "queued",
            "lease_until": self._now() + Decimal(str(round(hold_s, 3))),
            LEASE_SHARD: lease_shard(job_id),
        }
        return self._set_if_status(
            job_id, ["queued", "running"], fields, lease_is=seen_lease, add={"sweeps": 1}
        )

    def expire(self, job_id: str, seen_lease: Any, error: Mapping[str, Any]) -> Item | None:
        fields = finish_fields("failed", None, error, None)
        return self._set_final(job_id, ["queued", "running"], fields, lease_is=seen_lease)

    def set_execution(self, job_id: str, execution_arn: str) -> Item | None:
        # The workflow owns the job from here (Step Functions retries and times out).
        fields = {"execution_arn": execution_arn, "lease_until": 0, LEASE_SHARD: REMOVE}
        return self._set_if_status(job_id, ["running"], fields)

    def await_approval(self, job_id: str, task_token: str) -> Item | None:
        fields = {"status": "waiting_approval", "task_token": task_token, LEASE_SHARD: REMOVE}
        return self._set_if_status(job_id, ["running"], fields)

    def answer_approval(
        self, job_id: str, approved: bool, comment: str, by: str | None = None
    ) -> Item | None:
        approval = {"approved": approved, "comment": comment, "at": now_iso(self.clock), "by": by}
        fields = {"status": "running", "task_token": "", "approval": approval}
        return self._set_if_status(job_id, ["waiting_approval"], fields)

    def finish(
        self,
        job_id: str,
        status: FinalStatus,
        *,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        from_statuses: Iterable[str] = RUNNING_STATUSES,
        known: Mapping[str, Any] | None = None,
    ) -> Item | None:
        fields = finish_fields(status, result, error, extra)
        return self._set_final(job_id, sorted(set(from_statuses)), fields, known=known)

    def create(
        self,
        *,
        job_id: str,
        tenant_id: str,
        request: JobRequest,
        source: str,
        idempotency_key: str | None = None,
        parent_job_id: str | None = None,
        max_queued: int | None = None,
        caller: str | None = None,
        correlation_id: str | None = None,
    ) -> tuple[Item, bool]:
        item = new_job_item(
            job_id=job_id,
            tenant_id=tenant_id,
            request=request,
            source=source,
            idempotency_key=idempotency_key,
            parent_job_id=parent_job_id,
            caller=caller,
            correlation_id=correlation_id,
            stamp=now_iso(self.clock),
            expires_at=self._expires(),
        )
        item["lease_until"] = Decimal(str(round(self.clock() + self.queued_hold_s, 3)))
        item[LEASE_SHARD] = lease_shard(job_id)
        item["counted"] = True
        if self._put_new(item, max_queued):
            return item, True
        return existing_job(self.get(job_id), item)

    def record_step(
        self,
        job_id: str,
        step: str,
        *,
        usage: Usage,
        cost_usd: Decimal,
        model: str | None = None,
        output: Any = None,
    ) -> bool:
        step_item = new_step_item(
            job_id,
            step,
            usage=usage,
            cost_usd=cost_usd,
            model=model,
            output=output,
            stamp=now_iso(self.clock),
            expires_at=self._expires(),
        )
        return self._add_step(job_id, step_item, usage, cost_usd)


def new_job_item(
    *,
    job_id: str,
    tenant_id: str,
    request: JobRequest,
    source: str,
    idempotency_key: str | None,
    parent_job_id: str | None,
    stamp: str,
    expires_at: int,
    caller: str | None = None,
    correlation_id: str | None = None,
) -> Item:
    item: Item = {
        "job_id": job_id,
        "sk": JOB_SK,
        "tenant_id": tenant_id,
        "agent": request.agent,
        "status": "queued",
        "input": dump_json(request.input),
        "metadata": dump_json(request.metadata),
        "route": request.route,
        "require_approval": request.require_approval,
        "request_hash": request_hash(request),
        "source": source,
        "cost_usd": Decimal(0),
        "attempts": 0,
        "lease_until": 0,
        "created_at": stamp,
        "updated_at": stamp,
        "expires_at": expires_at,
    }
    optional = {
        "callback_url": request.callback_url or None,
        "max_cost_usd": (
            Decimal(str(request.max_cost_usd)) if request.max_cost_usd is not None else None
        ),
        "idempotency_key": idempotency_key,
        "parent_job_id": parent_job_id,
        # The submitting key, its role and end customer (stratus.agents.Principal): the
        # worker runs the job's tools as them.
        "caller": caller,
        # One id end to end (stratus.correlation): queues, workflow, events, callbacks.
        "correlation_id": correlation_id,
    }
    item.update({k: v for k, v in optional.items() if v is not None})
    return item


def existing_job(existing: Item | None, new: Item) -> tuple[Item, bool]:
    """What ``create`` answers when the id is taken: the job, or IdempotencyKeyReused."""
    if existing is None or existing["tenant_id"] != new["tenant_id"]:
        # Cannot happen: the id is derived from the tenant.
        raise RuntimeError(f"job id {new['job_id']} is taken by another tenant's job")
    if existing.get("request_hash") != new["request_hash"]:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different job request"
        )
    return existing, False


def finish_fields(
    status: FinalStatus,
    result: Any,
    error: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
) -> Item:
    """The fields ``finish`` sets (besides ``updated_at``)."""
    fields: Item = {"status": status, "lease_until": 0, LEASE_SHARD: REMOVE, **(extra or {})}
    if result is not None:
        fields["result"] = capped_json(result)
    if error is not None:
        fields["error"] = dict(error)
    return fields


def new_step_item(
    job_id: str,
    step: str,
    *,
    usage: Usage,
    cost_usd: Decimal,
    model: str | None,
    output: Any,
    stamp: str,
    expires_at: int,
) -> Item:
    item: Item = {
        "job_id": job_id,
        "sk": STEP_PREFIX + step,
        "status": "succeeded",
        "cost_usd": cost_usd,
        "updated_at": stamp,
        "expires_at": expires_at,
        **usage.model_dump(),
    }
    if model:
        item["model"] = model
    if output is not None:
        item["output"] = capped_json(output)
    return item


def output_of(step_item: Item | None) -> Any:
    if not step_item or "output" not in step_item:
        return None
    return json.loads(step_item["output"])

"""In-process fakes of the job ports (unit tests): plain dicts under a lock.

:class:`MemoryJobStore` keeps the same semantics as the DynamoDB adapter (the
contract tests run both); the other fakes record what they were asked to do.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from stratus.jobs.contracts import JOB_SK, STEP_PREFIX, Clock, now_iso
from stratus.jobs.store import (
    LEASE_SHARD,
    Item,
    JobItems,
    counter_key,
    lease_shard,
    output_of,
)
from stratus.tenant_limits import too_many_jobs
from stratus.usage import Usage

_USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")


def _counter(tenant_id: str) -> tuple[str, str]:
    key = counter_key(tenant_id)
    return key["job_id"], key["sk"]


class MemoryJobStore(JobItems):
    """The :class:`~stratus.jobs.store.JobStore` port over a dict of items."""

    def __init__(self, *, retention_days: int = 30, clock: Clock = time.time) -> None:
        super().__init__(retention_days=retention_days, clock=clock)
        self._items: dict[tuple[str, str], Item] = {}
        self._lock = threading.RLock()

    def _put_new(self, item: Item, max_queued: int | None = None) -> bool:
        with self._lock:
            if (item["job_id"], JOB_SK) in self._items:
                return False
            counter = self._items.setdefault(_counter(item["tenant_id"]), {})
            queued = int(counter.get("queued", 0))
            if max_queued is not None and queued >= max_queued:
                raise too_many_jobs(max_queued, queued)
            counter["queued"] = queued + 1
            self._items[(item["job_id"], JOB_SK)] = copy.deepcopy(item)
        return True

    def queued_count(self, tenant_id: str) -> int:
        with self._lock:
            counter = self._items.get(_counter(tenant_id), {})
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
        with self._lock:  # the lock is re-entrant: the transition and the count at once
            done = self._transition(job_id, allowed, fields, lease_is=lease_is)
            if done is not None and done.get("counted"):
                counter = self._items[_counter(done["tenant_id"])]
                counter["queued"] = int(counter.get("queued", 0)) - 1
        return done

    def get(self, job_id: str) -> Item | None:
        with self._lock:
            return copy.deepcopy(self._items.get((job_id, JOB_SK)))

    def steps(self, job_id: str) -> list[Item]:
        with self._lock:
            found = [
                copy.deepcopy(item)
                for (pk, sk), item in self._items.items()
                if pk == job_id and sk.startswith(STEP_PREFIX)
            ]
        return sorted(found, key=lambda item: str(item["sk"]))

    def _transition(
        self, job_id: str, allowed: Iterable[str], fields: Mapping[str, Any], **also: Any
    ) -> Item | None:
        """Apply ``fields`` if the job's status is in ``allowed``; the new item, or None."""
        with self._lock:
            job = self._items.get((job_id, JOB_SK))
            lease_expired = also.get("lease_expired_before")
            if job is None:
                return None
            ok = job["status"] in set(allowed) or (
                lease_expired is not None
                and job["status"] == "running"
                and Decimal(str(job.get("lease_until", 0))) < lease_expired
            )
            lease_is = also.get("lease_is")
            if lease_is is not None and Decimal(str(job.get("lease_until", 0))) != Decimal(
                str(lease_is)
            ):
                ok = False
            if not ok:
                return None
            for name, value in fields.items():
                if value is None:
                    job.pop(name, None)
                else:
                    job[name] = copy.deepcopy(value)
            job["updated_at"] = now_iso(self.clock)
            for name, delta in (also.get("add") or {}).items():
                job[name] = int(job.get(name, 0)) + int(delta)
            if also.get("count_attempt"):
                job["attempts"] = int(job.get("attempts", 0)) + 1
            return copy.deepcopy(job)

    def claim(
        self, job_id: str, lease_s: float, fields: Mapping[str, Any] | None = None
    ) -> Item | None:
        now = Decimal(str(round(self.clock(), 3)))
        return self._transition(
            job_id,
            ("queued",),
            {
                **(fields or {}),
                "status": "running",
                "lease_until": now + Decimal(str(round(lease_s, 3))),
                LEASE_SHARD: lease_shard(job_id),
            },
            lease_expired_before=now,
            count_attempt=True,
        )

    def _set_if_status(
        self,
        job_id: str,
        allowed: list[str],
        fields: Item,
        *,
        lease_is: Any = None,
        add: Mapping[str, int] | None = None,
    ) -> Item | None:
        return self._transition(job_id, allowed, fields, lease_is=lease_is, add=add)

    def expired_leases(self, before: float, limit: int = 100) -> list[Item]:
        cutoff = Decimal(str(round(before, 3)))
        with self._lock:
            found = [
                copy.deepcopy(item)
                for (_, sk), item in self._items.items()
                if sk == JOB_SK
                and LEASE_SHARD in item
                and Decimal(str(item.get("lease_until", 0))) < cutoff
            ]
        return found[:limit]

    def record_callback(
        self, job_id: str, status: Mapping[str, Any], *, only_new: bool = False
    ) -> bool:
        with self._lock:
            job = self._items.get((job_id, JOB_SK))
            if job is None or (only_new and "callback" in job):
                return False
            job["callback"] = copy.deepcopy(dict(status))
        return True

    def mark_notified(self, job_id: str) -> None:
        with self._lock:
            job = self._items.get((job_id, JOB_SK))
            if job is not None:
                job.update(notified=True, updated_at=now_iso(self.clock))

    def _add_step(self, job_id: str, step_item: Item, usage: Usage, cost_usd: Decimal) -> bool:
        with self._lock:
            job = self._items.get((job_id, JOB_SK))
            if job is None or (job_id, step_item["sk"]) in self._items:
                return False
            self._items[(job_id, step_item["sk"])] = copy.deepcopy(step_item)
            job["cost_usd"] = Decimal(str(job.get("cost_usd", 0))) + cost_usd
            for name in _USAGE_FIELDS:
                job[name] = int(job.get(name, 0)) + int(getattr(usage, name))
            job["updated_at"] = step_item["updated_at"]
        return True

    def step_output(self, job_id: str, step: str) -> Any:
        with self._lock:
            return output_of(copy.deepcopy(self._items.get((job_id, STEP_PREFIX + step))))


# -- fakes of the other ports --------------------------------------------------------


@dataclass
class MemoryQueue:
    """:class:`~stratus.jobs.ports.MessageQueue`: keeps ``(queue_url, body, attributes)``
    and ``(queue_url, receipt_handle, timeout_s)`` of visibility changes."""

    sent: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    visibility: list[tuple[str, str, int]] = field(default_factory=list)

    def send(self, queue_url: str, body: str, attributes: Mapping[str, str]) -> None:
        self.sent.append((queue_url, body, dict(attributes)))

    def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        self.visibility.append((queue_url, receipt_handle, timeout_s))


@dataclass
class MemoryWorkflows:
    """:class:`~stratus.jobs.ports.WorkflowEngine`: executions and task answers as lists."""

    started: dict[str, str] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    successes: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def start(self, state_machine_arn: str, name: str, execution_input: str) -> str:
        arn = state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name
        self.started.setdefault(arn, execution_input)
        return arn

    def stop(self, execution_arn: str, *, error: str, cause: str) -> None:
        self.stopped.append(execution_arn)

    def send_task_success(self, task_token: str, output: str) -> None:
        self.successes.append((task_token, output))

    def send_task_failure(self, task_token: str, *, error: str, cause: str) -> None:
        self.failures.append((task_token, error, cause))


@dataclass
class MemoryEvents:
    """:class:`~stratus.jobs.ports.EventPublisher`: keeps ``(message, attributes)``."""

    published: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    fail: bool = False

    def publish(self, message: str, attributes: Mapping[str, str]) -> None:
        if self.fail:
            raise ConnectionError("the event bus is down")
        self.published.append((message, dict(attributes)))


@dataclass
class MemoryCallbacks:
    """:class:`~stratus.jobs.ports.CallbackSender`: keeps ``(destination, body, headers)``
    and answers the next of ``statuses`` (204 when they run out)."""

    posted: list[tuple[Any, bytes, dict[str, str]]] = field(default_factory=list)
    statuses: list[int | Exception] = field(default_factory=list)

    def post(self, dest: Any, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        self.posted.append((dest, body, dict(headers)))
        outcome = self.statuses.pop(0) if self.statuses else 204
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@dataclass
class MemorySecrets:
    """:class:`~stratus.jobs.ports.SecretSource` over a dict of secret strings."""

    values: dict[str, str] = field(default_factory=dict)

    def secret_string(self, secret_id: str) -> str:
        return self.values[secret_id]

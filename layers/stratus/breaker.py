"""A circuit breaker per (endpoint, model) whose state the whole fleet shares.

State is one item in the limits table, ``BREAKER#<endpoint>#<model>``:

* **closed**: no ``opened_until``. Each provider failure (5xx, timeout,
  connection error; not 4xx, not a key's 429) does ``ADD failures 1``; a
  success after failures resets it. At ``breaker_failures`` failures in a row
  the breaker opens: ``opened_until = now + breaker_open_s``.
* **open**: until ``opened_until`` every instance skips the model at once
  (the gateway falls back to the next model of the chain) without a request.
* **half-open**: once ``opened_until`` passed, exactly one caller in the fleet
  wins the probe (a conditional ``SET probe_until``); the others still skip
  it. A successful probe closes the breaker, a failed one opens it again.

Without a limits table (scripts, unit tests) the same state lives in process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from stratus import ddb
from stratus.config import Settings
from stratus.observability import logger

#: How long a probe may take before another caller may probe instead.
PROBE_S = 60.0


@dataclass(frozen=True)
class Admission:
    allowed: bool
    probe: bool = False
    failures: int = 0
    state: str = "closed"


class CircuitBreaker:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._table = settings.limits_table
        self._threshold = settings.breaker_failures
        self._open_s = settings.breaker_open_s
        self._clock = clock
        self._local: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _pk(endpoint: str, model: str) -> str:
        return f"BREAKER#{endpoint}#{model}"

    def state(self, endpoint: str, model: str) -> dict[str, Any]:
        pk = self._pk(endpoint, model)
        if not self._table:
            with self._lock:
                return dict(self._local.get(pk, {}))
        return ddb.item(
            ddb.client()
            # Eventually consistent (half the read cost, on every call): an instance
            # may see a just-opened breaker up to a second late, which only lets
            # one more request reach a failing model.
            .get_item(TableName=self._table, Key=ddb.key(pk=pk), ConsistentRead=False)
            .get("Item")
        )

    def before(self, endpoint: str, model: str) -> Admission:
        now = self._clock()
        item = self.state(endpoint, model)
        failures = int(item.get("failures", 0))
        opened_until = item.get("opened_until")
        if opened_until is None:
            return Admission(allowed=True, failures=failures)
        if now < float(opened_until):
            return Admission(allowed=False, failures=failures, state="open")
        # Half-open: one probe for the whole fleet.
        if self._claim_probe(self._pk(endpoint, model), opened_until, now):
            return Admission(allowed=True, probe=True, failures=failures, state="half_open")
        return Admission(allowed=False, failures=failures, state="half_open")

    def success(self, endpoint: str, model: str, admission: Admission) -> None:
        if not admission.probe and admission.failures == 0:
            return  # the common case costs no write
        pk = self._pk(endpoint, model)
        if admission.probe:
            logger.info("circuit closed", extra={"endpoint": endpoint, "model": model})
        self._write(pk, "SET failures = :zero REMOVE opened_until, probe_until", {"zero": 0})

    def failure(self, endpoint: str, model: str, admission: Admission) -> bool:
        """Count a failure; True if the breaker is (now) open."""
        pk = self._pk(endpoint, model)
        now = self._clock()
        until = now + self._open_s
        if admission.probe:
            self._write(pk, "SET opened_until = :u REMOVE probe_until", {"u": until})
            logger.warning("circuit re-opened", extra={"endpoint": endpoint, "model": model})
            return True
        attributes = self._write(pk, "ADD failures :one", {"one": 1}, returns=True)
        failures = int(attributes.get("failures", 0))
        if failures >= self._threshold:
            self._write(pk, "SET opened_until = :u", {"u": until})
            logger.warning(
                "circuit opened",
                extra={"endpoint": endpoint, "model": model, "failures": failures},
            )
            return True
        return False

    def _claim_probe(self, pk: str, opened_until: Any, now: float) -> bool:
        if not self._table:
            with self._lock:
                item = self._local.setdefault(pk, {})
                if float(item.get("probe_until", 0)) > now:
                    return False
                item["probe_until"] = now + PROBE_S
                return True
        try:
            ddb.client().update_item(
                TableName=self._table,
                Key=ddb.key(pk=pk),
                UpdateExpression="SET probe_until = :p",
                ConditionExpression=(
                    "opened_until = :o AND "
                    "(attribute_not_exists(probe_until) OR probe_until < :now)"
                ),
                ExpressionAttributeValues=ddb.values(p=now + PROBE_S, o=opened_until, now=now),
            )
        except ClientError as exc:
            if ddb.conditional_failed(exc):
                return False
            raise
        return True

    def _write(
        self, pk: str, expression: str, names: dict[str, Any], *, returns: bool = False
    ) -> dict[str, Any]:
        if not self._table:
            return self._write_local(pk, expression, names)
        try:
            result = ddb.client().update_item(
                TableName=self._table,
                Key=ddb.key(pk=pk),
                UpdateExpression=expression,
                ExpressionAttributeValues=ddb.values(**names),
                ReturnValues="UPDATED_NEW" if returns else "NONE",
            )
        except ClientError:
            logger.exception("circuit breaker state could not be written")
            return {}
        return ddb.item(result.get("Attributes"))

    def _write_local(self, pk: str, expression: str, names: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            item = self._local.setdefault(pk, {})
            if expression.startswith("ADD failures"):
                item["failures"] = int(item.get("failures", 0)) + 1
            elif expression.startswith("SET failures"):
                item.clear()
            elif "opened_until" in expression:
                item["opened_until"] = names["u"]
                item.pop("probe_until", None)
            return dict(item)

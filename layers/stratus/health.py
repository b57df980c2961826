"""What ``GET /v1/health`` reports: each dependency this function really uses, checked.

A probe is a callable that raises when its dependency is unusable. :func:`probes_for`
derives them from the function's own configuration (what the stack granted it, and so
what it needs): every table it is given (``DescribeTable``), the model key secret
(read and parsed, never returned: the keys' cache, ``STRATUS_SECRET_CACHE_S``, applies)
when it calls models, and every queue it sends to or consumes (``GetQueueAttributes``).
:func:`check_health` runs them together (one wave, :mod:`stratus.fanout`) and reports
each with ``ok`` and ``latency_ms``; the route answers 200 when all are ok, 503 with the
failing ones' names otherwise.

Nothing sensitive leaves: dependencies carry logical labels only (``tenants_table``,
``model_secret``, ``queue_triage``), never a table name, URL, ARN or key; failures are
logged by exception type, never with data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from stratus.contracts import HealthResponse as HealthSummary
from stratus.fanout import run_all
from stratus.observability import logger

if TYPE_CHECKING:
    from stratus.aws import AwsClients
    from stratus.config import Settings

Probe = Callable[[], object]

#: The labels of the original ``checks`` summary (kept for existing clients).
SUMMARY_LABELS = ("tenants_table", "idempotency_table", "orders_table")
MODEL_SECRET = "model_secret"  # noqa: S105 - a label, not a secret


class DependencyHealth(BaseModel):
    ok: bool
    latency_ms: float = Field(ge=0)


class HealthResponse(HealthSummary):
    """The health body: ``dependencies`` (every one checked) and ``failing`` (their names).

    It keeps the name of the summary it extends (the OpenAPI component ``HealthResponse``)."""

    dependencies: dict[str, DependencyHealth] = Field(default_factory=dict)
    failing: list[str] = Field(default_factory=list)


@dataclass
class Checked:
    dependencies: dict[str, DependencyHealth] = field(default_factory=dict)

    @property
    def failing(self) -> list[str]:
        return [name for name, dep in self.dependencies.items() if not dep.ok]

    @property
    def healthy(self) -> bool:
        return not self.failing

    def summary(self, agent: bool) -> dict[str, str]:
        """The original ``checks`` map: the three tables, and ``model_keys`` for an agent."""
        found = {
            label: "ok" if self.dependencies[label].ok else "error"
            for label in SUMMARY_LABELS
            if label in self.dependencies
        }
        if agent and MODEL_SECRET in self.dependencies:
            found["model_keys"] = "ok" if self.dependencies[MODEL_SECRET].ok else "error"
        return found


def _timed(label: str, probe: Probe) -> Callable[[], float]:
    def run() -> float:
        started = time.perf_counter()
        try:
            probe()
        except Exception as exc:  # a health check reports failures, it does not raise them
            logger.warning(
                "health check failed", extra={"check": label, "error": type(exc).__name__}
            )
            raise _Failed((time.perf_counter() - started) * 1000) from None
        return (time.perf_counter() - started) * 1000

    return run


class _Failed(Exception):
    def __init__(self, latency_ms: float) -> None:
        super().__init__("dependency failed")
        self.latency_ms = latency_ms


def check_health(probes: Mapping[str, Probe]) -> Checked:
    """Run every probe together; each dependency's ``ok`` and ``latency_ms``; never raises."""
    labels = list(probes)
    outcomes = run_all([_timed(label, probes[label]) for label in labels])
    checked = Checked()
    for label, outcome in zip(labels, outcomes, strict=True):
        if outcome.error is None:
            latency, ok = float(outcome.value or 0), True
        else:
            latency, ok = float(getattr(outcome.error, "latency_ms", 0.0)), False
        checked.dependencies[label] = DependencyHealth(ok=ok, latency_ms=round(latency, 2))
    return checked


def run_checks(probes: Mapping[str, Probe]) -> dict[str, str]:
    """``label -> "ok" | "error"`` for every probe, in order; never raises."""
    checked = check_health(probes)
    return {label: "ok" if dep.ok else "error" for label, dep in checked.dependencies.items()}


def _table_fields(settings: Settings) -> list[tuple[str, str]]:
    """``(label, table name)`` of every table setting this function has."""
    found = []
    for name in type(settings).model_fields:
        if name.endswith("_table") and name != "price_table":
            value = getattr(settings, name)
            if isinstance(value, str) and value:
                found.append((name, value))
    return found


def _queue_probe(sqs: Any, url: str) -> Probe:
    return lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])


def probes_for(
    settings: Settings, clients: AwsClients, model_keys: Callable[[], object] | None
) -> dict[str, Probe]:
    """The probes of this function: its tables, its model secret, its queues.

    ``model_keys`` reads and parses the model key secret (None: no model secret here).
    """
    probes: dict[str, Probe] = {}
    for label, table in _table_fields(settings):
        probes[label] = clients.table(table).describe
    if model_keys is not None:
        probes[MODEL_SECRET] = model_keys
    queues: dict[str, str] = {
        f"queue_{agent}": url for agent, url in sorted(settings.job_queues.items()) if url
    }
    if settings.job_queue_url and settings.job_queue_url not in queues.values():
        queues[f"queue_{settings.agent or 'jobs'}"] = settings.job_queue_url
    if settings.callback_queue_url:
        queues["queue_callbacks"] = settings.callback_queue_url
    if queues:
        sqs = clients.client("sqs")
        for label, url in queues.items():
            probes[label] = _queue_probe(sqs, url)
    return probes


#: The health body (this module's :class:`HealthResponse`).
HealthReport = HealthResponse

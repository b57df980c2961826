"""Queue plans: the ingest queue, one job queue per agent and the callback deliveries,
each with its DLQ."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infra.config import StageConfig
from infra.topology.common import (
    CALLBACK_MAX_RECEIVE_COUNT,
    CALLBACK_QUEUE,
    CALLBACKS_BATCH_SIZE,
    CALLBACKS_TIMEOUT_S,
    INGEST_QUEUE,
    INGEST_TIMEOUT_S,
    agent_queue,
    dlq,
    pascal,
)
from stratus.agents import AgentSpec


@dataclass(frozen=True)
class QueuePlan:
    """A standard queue with its own DLQ, and the function that consumes it.

    The visibility timeout is six times the consumer's timeout (AWS guidance for
    Lambda event sources): a batch still running is never handed out twice.
    """

    name: str
    construct_id: str
    description: str
    visibility_timeout_s: int
    max_receive_count: int
    consumer: str
    batch_size: int
    batching_window_s: int = 0
    report_batch_item_failures: bool = True
    #: The event source mapping's ScalingConfig.MaximumConcurrency (stage
    #: ``job_max_concurrency``; AWS: 2-1000): one queue cannot take every instance.
    max_concurrency: int | None = None
    #: DLQ messages are kept for the maximum (14 days) so that nothing is lost.
    dlq_retention_s: int = 14 * 24 * 3600

    @property
    def dlq_name(self) -> str:
        return dlq(self.name)


def queue_plans(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> list[QueuePlan]:
    """The ingest queue, the callback queue, then one queue per agent (each with its DLQ)."""
    plans = [
        QueuePlan(
            name=INGEST_QUEUE,
            construct_id="Ingest",
            description="Producer contract v1 messages from other systems",
            visibility_timeout_s=6 * INGEST_TIMEOUT_S,
            max_receive_count=stage.job_max_receive_count,
            consumer="ingest",
            batch_size=10,
            max_concurrency=stage.job_max_concurrency,
        ),
        QueuePlan(
            name=CALLBACK_QUEUE,
            construct_id="Callbacks",
            description="Job callback deliveries (retried with backoff, then dead-lettered)",
            visibility_timeout_s=6 * CALLBACKS_TIMEOUT_S,
            max_receive_count=CALLBACK_MAX_RECEIVE_COUNT,
            consumer="callbacks",
            batch_size=CALLBACKS_BATCH_SIZE,
            max_concurrency=stage.job_max_concurrency,
        ),
    ]
    for name in sorted(specs):
        plans.append(
            QueuePlan(
                name=agent_queue(name),
                construct_id=f"Agent{pascal(name)}",
                description=f"Jobs of agent {name}",
                visibility_timeout_s=6 * stage.job_worker_timeout_s,
                max_receive_count=stage.job_max_receive_count,
                consumer=f"worker:{name}",
                batch_size=stage.job_batch_size,
                batching_window_s=stage.job_batching_window_s,
                max_concurrency=stage.job_max_concurrency,
            )
        )
    return plans

"""The ingest queue's consumer: producer contract v1 messages become jobs.

Any system may put a message on the ingest queue with plain ``boto3`` or
``aws sqs send-message`` (schema: ``events/producer/contract-v1.schema.json``).
What becomes a job and what is poison (copied to the ingest DLQ with its reason,
then acknowledged) is :class:`stratus.jobs.ingest.Ingest`'s; this handler maps
each SQS record onto it. Transient failures raise: the record is reported
failed and comes back.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.agents import load_agent
from functions.handlers.batches import sqs_batch
from stratus import composition, correlation
from stratus.observability import logger, metrics, tracer


def input_limit(agent: str) -> int:
    """The agent's ``limits.max_input_chars`` (applied at submission)."""
    return load_agent(agent).limits.max_input_chars


def _account(source_arn: str) -> str:
    """The queue's account id (``arn:aws:sqs:region:account:name``): the root's SenderId."""
    parts = source_arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def record_handler(record: SQSRecord) -> None:
    created = composition.current().job_ingest.accept(
        record.body,
        message_id=record.message_id,
        source_queue=record.event_source_arn or "",
        receive_count=str(record.attributes.approximate_receive_count or "1"),
        input_limit=input_limit,
        # Who sent it (AWS sets SenderId; a producer cannot): bound to tenants by the stage.
        sender_id=str(record.attributes.sender_id or ""),
        account_id=_account(record.event_source_arn or ""),
        # The producer's attribute ``correlation_id`` is honoured (else a new id).
        correlation_id=correlation.from_message_attributes(
            record.raw_event.get("messageAttributes")
        ),
    )
    if created is None:
        metrics.add_metric(name="PoisonMessages", unit="Count", value=1)
    else:
        metrics.add_metric(name="JobsIngested", unit="Count", value=1 if created else 0)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return sqs_batch(event, context, record_handler)

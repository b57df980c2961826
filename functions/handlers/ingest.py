"""The ingest queue's consumer: producer contract v1 messages become jobs.

Any system may put a message on the ingest queue with plain ``boto3`` or
``aws sqs send-message`` (schema: ``events/sqs/producer-contract-v1.schema.json``).
Each valid message becomes a job (idempotent: the job id derives from the
message's ``idempotency_key``, or from its SQS message id, so a redelivered
message never creates a second job) and is sent on to its agent's own queue.

A message that can never succeed (not JSON, not the contract, unknown version,
unknown agent, unknown or inactive tenant) is a *poison* message: it is copied
to the ingest DLQ with the reason in message attributes (``stratus_reason``,
``stratus_detail``, ...) and acknowledged, so it never blocks its batch and is
never retried pointlessly. Transient failures (DynamoDB, SQS) raise: the record
is reported failed and comes back; after ``maxReceiveCount`` SQS itself moves
it to the same DLQ.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from stratus import aws
from stratus.config import get_settings
from stratus.errors import ConfigurationError, IdempotencyKeyReused
from stratus.jobs import PRODUCER_VERSIONS, JobService, ProducerMessage, tenant_is_active
from stratus.observability import logger, metrics, tracer

#: A batch whose records all fail is reported record by record, not raised as one error.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
MAX_DETAIL_CHARS = 1000


class PoisonMessage(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@cache
def _service() -> JobService:
    return JobService(get_settings())


def parse(body: str) -> ProducerMessage:
    """The message, or :class:`PoisonMessage` saying why it can never become a job."""
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise PoisonMessage("invalid_json", str(exc)) from None
    if not isinstance(raw, dict):
        raise PoisonMessage("invalid_message", "the body must be a JSON object")
    if str(raw.get("version")) not in PRODUCER_VERSIONS:
        raise PoisonMessage(
            "unsupported_version",
            f"version {raw.get('version')!r}; supported: {', '.join(PRODUCER_VERSIONS)}",
        )
    try:
        return ProducerMessage.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise PoisonMessage("invalid_message", problems) from None


def record_handler(record: SQSRecord) -> None:
    try:
        message = parse(record.body)
        service = _service()
        if not service.queues.knows(message.agent):
            raise PoisonMessage("unknown_agent", f"no agent named {message.agent!r}")
        settings = get_settings()
        if not settings.tenants_table:
            raise ConfigurationError("STRATUS_TENANTS_TABLE is not set")
        if not tenant_is_active(settings.tenants_table, message.tenant_id):
            raise PoisonMessage("unknown_tenant", f"no active tenant {message.tenant_id!r}")
        try:
            _, created = service.submit(
                message.request(),
                tenant_id=message.tenant_id,
                idempotency_key=message.idempotency_key or f"sqs:{record.message_id}",
                source="sqs",
            )
        except IdempotencyKeyReused as exc:
            raise PoisonMessage("idempotency_key_reused", exc.message) from None
    except PoisonMessage as poison:
        dead_letter(record, poison)
        return
    metrics.add_metric(name="JobsIngested", unit="Count", value=1 if created else 0)


def dead_letter(record: SQSRecord, poison: PoisonMessage) -> None:
    """Copy the message to the ingest DLQ with its reason; the original is then acknowledged."""
    dlq_url = get_settings().ingest_dlq_url
    if not dlq_url:
        raise ConfigurationError("STRATUS_INGEST_DLQ_URL is not set")
    attributes = {
        "stratus_reason": poison.reason,
        "stratus_detail": poison.detail[:MAX_DETAIL_CHARS] or poison.reason,
        "stratus_source_message_id": record.message_id,
        "stratus_source_queue": record.event_source_arn or "",
        "stratus_receive_count": str(record.attributes.approximate_receive_count or "1"),
    }
    aws.client("sqs").send_message(
        QueueUrl=dlq_url,
        MessageBody=record.body or "(empty)",
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value}
            for name, value in attributes.items()
            if value
        },
    )
    metrics.add_metric(name="PoisonMessages", unit="Count", value=1)
    logger.warning(
        "poison message moved to the DLQ",
        extra={"reason": poison.reason, "detail": poison.detail, "message_id": record.message_id},
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
    return response

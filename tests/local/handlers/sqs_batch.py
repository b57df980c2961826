"""SQS handlers: partial batch failures with Powertools, and malformed failure reports."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel

# The model validates every record, so a malformed event shows up as failures.
processor = BatchProcessor(
    event_type=EventType.SQS, model=SqsRecordModel, raise_on_entire_batch_failure=False
)


def _record(record: SqsRecordModel) -> None:
    if "fail" in str(record.body):
        raise ValueError(f"cannot process {record.body}")


def handler(event: dict[str, Any], context: Any) -> Any:
    return process_partial_response(event, _record, processor, context)


def bogus_failures(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Report a message id that is not in the batch: AWS fails the whole batch."""
    return {"batchItemFailures": [{"itemIdentifier": "not-a-message-in-this-batch"}]}


def report_all_failed(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}

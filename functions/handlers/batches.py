"""SQS batches with partial failures, the one way every queue consumer handles them.

Powertools ``BatchProcessor`` runs each record through the consumer's handler and
reports only the failed ones (``ReportBatchItemFailures``), so one bad record never
holds back its batch; a batch whose records all fail is reported record by record,
not raised as one error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def sqs_batch(
    event: dict[str, Any], context: Any, record_handler: Callable[..., Any]
) -> dict[str, Any]:
    """``{"batchItemFailures": [...]}`` for ``event``, each record run by ``record_handler``."""
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )

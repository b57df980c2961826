"""The callback queue's consumer: delivers finished jobs' callbacks, one attempt per record.

Each record names a finished job; :class:`stratus.jobs.callbacks.CallbackDelivery`
(``composition.current().job_callbacks``) posts its signed completion event to the
checked address and records the attempt on the job. A failed attempt is reported
failed and comes back after the retry backoff; after ``maxReceiveCount`` attempts
(recorded ``failed``) SQS moves it to the callback DLQ.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.handlers.batches import sqs_batch
from stratus import composition
from stratus.jobs.retries import Delivery
from stratus.observability import logger, metrics, tracer


def record_handler(record: SQSRecord) -> None:
    runtime = composition.current()
    receives = int(record.attributes.approximate_receive_count or 1)
    delivery = Delivery(runtime.settings.callback_queue_url, record.receipt_handle, receives)
    state = runtime.job_callbacks.deliver(record.body, delivery)
    metrics.add_metric(name=f"Callbacks{state.capitalize()}", unit="Count", value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return sqs_batch(event, context, record_handler)

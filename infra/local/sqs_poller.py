"""SQS event source mappings for the local cloud, behaving like Lambda's pollers.

In AWS, Lambda polls the queue, invokes the function synchronously with a batch,
and deletes what succeeded; everything else becomes visible again after the
queue's visibility timeout and SQS moves it to the DLQ once its receive count
passes ``maxReceiveCount``. moto serves the queue (and implements the redrive on
receive), so the poller only has to do what the Lambda service does:

* receive up to ``batch_size`` messages (10 per call), waiting up to
  ``maximum_batching_window_s`` to fill the batch;
* build the event exactly as AWS does (``Records`` with lowerCamel keys,
  ``messageAttributes`` in Lambda's shape, ``eventSourceARN``, ``awsRegion``), the
  system ``attributes`` as SQS reports them: ``SenderId`` is the sending request's
  access key id (:mod:`infra.local.moto_sender`; plain moto reports one constant), the
  identity the ingest function binds producers by;
* invoke the function and delete every message that succeeded, honouring
  ``ReportBatchItemFailures`` with AWS's rules for malformed reports;
* on a failed invocation (error, timeout, crash) delete nothing.

The poller never deletes anything it is not sure about: any failure of its own
leaves the messages on the queue, to be redelivered after the visibility timeout.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.local.lambda_runtime import InvokeResult

logger = logging.getLogger(__name__)

#: SQS returns at most this many messages per ReceiveMessage call.
RECEIVE_MAX = 10
#: How long the polling thread backs off at most after an error of its own.
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class EventSourceMapping:
    """One queue -> function mapping, with the settings Lambda's mapping has."""

    function_name: str
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    maximum_batching_window_s: float = 0.0
    report_batch_item_failures: bool = True
    #: ``ScalingConfig.MaximumConcurrency``: invocations in flight at once (AWS: 2-1000);
    #: None: as many as the pollers.
    maximum_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.maximum_concurrency is not None and not 2 <= self.maximum_concurrency <= 1000:
            raise ValueError(f"maximum_concurrency must be 2..1000, not {self.maximum_concurrency}")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch_size must be 1..10000, not {self.batch_size}")
        if not 0 <= self.maximum_batching_window_s <= 300:
            raise ValueError("maximum_batching_window_s must be 0..300")
        if self.batch_size > RECEIVE_MAX and self.maximum_batching_window_s < 1:
            # The same rule CreateEventSourceMapping enforces for standard queues.
            raise ValueError("batch_size above 10 needs maximum_batching_window_s of at least 1")


class SqsPoller:
    """Poll one queue and feed its batches to one function, like an event source mapping."""

    def __init__(
        self,
        mapping: EventSourceMapping,
        invoke: Callable[[str, Any], InvokeResult],
        *,
        sqs_client: Any,
        region: str = "us-east-1",
        wait_time_s: int = 1,
        pollers: int = 1,
    ) -> None:
        if not 0 <= wait_time_s <= 20:
            raise ValueError("wait_time_s must be 0..20 (SQS long polling)")
        if pollers < 1:
            raise ValueError("pollers must be at least 1")
        #: Batches in flight at once (Lambda's SQS mapping starts with five pollers).
        self.pollers = pollers
        self.mapping = mapping
        self._invoke = invoke
        self._sqs = sqs_client
        self._region = region
        self._wait_time_s = wait_time_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._receiving = threading.Lock()
        self._lock = threading.Lock()
        self._stats = {"received": 0, "deleted": 0, "failed_records": 0, "invoke_errors": 0}
        # At most ``maximum_concurrency`` batches received and being handled at once.
        limit = mapping.maximum_concurrency
        self._slots = threading.BoundedSemaphore(limit) if limit is not None else None
        self._in_flight = 0
        #: The most invocations this mapping had in flight at once.
        self.max_in_flight = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> SqsPoller:
        """Poll in ``pollers`` daemon threads until :meth:`stop`."""
        if self.running:
            return self
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._run,
                name=f"sqs-poller-{self.mapping.function_name}-{index}",
                daemon=True,
            )
            for index in range(self.pollers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the threads to stop after their current poll, without waiting for them.

        Several pollers stop in about one long poll, not one each: ask them all first,
        then :meth:`stop` each one."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; returns within about one long poll (``wait_time_s``)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages received and deleted, records left for retry, failed invokes.

        ``failed_records`` counts every received record that was not deleted
        (reported failures and whole failed batches alike).
        """
        with self._lock:
            return dict(self._stats)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._stats[name] += delta

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                self.poll_once()
                backoff = 0.0
            except Exception:
                # The queue endpoint is down or the queue is gone: nothing was deleted.
                backoff = min(MAX_BACKOFF_S, backoff * 2 or 0.1)
                logger.exception(
                    "SQS poller for %s failed; retrying in %.1f s",
                    self.mapping.function_name,
                    backoff,
                )
                self._stop.wait(backoff)

    # -- one cycle -----------------------------------------------------------------

    def poll_once(self) -> int:
        """Receive one batch, invoke the function with it, delete what succeeded.

        Returns the number of messages handled (0 if the queue had none).
        """
        if self._slots is None:
            return self._poll_once()
        # A slot before receiving: a message never waits received (and invisible) for one.
        with self._slots:
            return self._poll_once()

    def _poll_once(self) -> int:
        # One receive at a time per mapping (moto's ReceiveMessage is not safe against a
        # concurrent one on the same queue); the invocations themselves overlap.
        with self._receiving:
            messages = self._receive_batch()
        if not messages:
            return 0
        self._count(received=len(messages))
        event = {"Records": [self.record(message) for message in messages]}
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            result = self._invoke(self.mapping.function_name, event)
        except Exception:
            logger.exception("invoking %s failed", self.mapping.function_name)
            result = None
        finally:
            with self._lock:
                self._in_flight -= 1
        if result is None or not result.ok:
            # As in AWS: the whole batch returns to the queue after its visibility timeout.
            self._count(invoke_errors=1, failed_records=len(messages))
            return len(messages)
        done = self._succeeded(messages, result.payload)
        self._count(failed_records=len(messages) - len(done))
        self._delete(done)
        return len(messages)

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Up to ``batch_size`` messages, gathered for at most the batching window.

        The window starts with the first message, so an idle queue costs one
        long poll per cycle; with a window of 0 it is a single ReceiveMessage.
        """
        mapping = self.mapping
        batch: dict[str, dict[str, Any]] = {}
        window_end: float | None = None
        while len(batch) < mapping.batch_size and not self._stop.is_set():
            if window_end is None:
                wait = self._wait_time_s
            else:
                remaining = window_end - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(self._wait_time_s, int(remaining))
            response = self._sqs.receive_message(
                QueueUrl=mapping.queue_url,
                MaxNumberOfMessages=min(RECEIVE_MAX, mapping.batch_size - len(batch)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            for message in received:
                # A message seen twice in one window keeps its newest receipt handle.
                batch[message["MessageId"]] = message
            if window_end is None:
                if not batch:
                    return []
                if mapping.maximum_batching_window_s <= 0:
                    break
                window_end = time.monotonic() + mapping.maximum_batching_window_s
            elif not received and wait == 0:
                self._stop.wait(min(0.05, max(0.0, window_end - time.monotonic())))
        return list(batch.values())

    def record(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """One SQS message as a record of Lambda's SQS event."""
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        record.update(
            {
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": self.mapping.queue_arn,
                "awsRegion": self._region,
            }
        )
        return record

    def _succeeded(
        self, messages: Sequence[Mapping[str, Any]], payload: Any
    ) -> list[Mapping[str, Any]]:
        """The messages to delete after a successful invocation, by AWS's rules.

        Without ReportBatchItemFailures: all of them. With it, a null or empty
        response, or ``batchItemFailures`` null or ``[]``, means all succeeded;
        an ``itemIdentifier`` that is missing, empty or not in the batch fails
        the whole batch. A response that is not an object at all (a string, a
        list) is treated as invalid too: when in doubt, retry rather than lose.
        """
        if not self.mapping.report_batch_item_failures or payload is None:
            return list(messages)
        failed = _reported_failures(payload, {m["MessageId"] for m in messages})
        if failed is None:
            logger.warning(
                "%s returned an invalid batch response %r: the whole batch will be retried",
                self.mapping.function_name,
                payload,
            )
            return []
        return [message for message in messages if message["MessageId"] not in failed]

    def _delete(self, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), RECEIVE_MAX):
            chunk = messages[start : start + RECEIVE_MAX]
            response = self._sqs.delete_message_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            self._count(deleted=len(response.get("Successful", [])))
            for failure in response.get("Failed", []):
                logger.warning(
                    "could not delete a message of %s: %s",
                    self.mapping.function_name,
                    failure.get("Message", failure),
                )


def _reported_failures(payload: Any, ids: set[str]) -> set[str] | None:
    """The message ids a batch response reports as failed; None if it is malformed."""
    if not isinstance(payload, dict):
        return None
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return None
        failed.add(identifier)
    return failed


def _b64(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API attribute (``StringValue``...) -> Lambda event attribute (``stringValue``...)."""
    out: dict[str, Any] = {}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = _b64(value["BinaryValue"])
    out["stringListValues"] = list(value.get("StringListValues", []))
    out["binaryListValues"] = [_b64(item) for item in value.get("BinaryListValues", [])]
    out["dataType"] = value["DataType"]
    return out

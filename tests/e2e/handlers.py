"""Test-only Lambda handlers run by the local cloud (SQS consumer, workflow task).

They record what they saw in the local orders table (partition ``e2e``), so the
tests can observe deliveries through the local AWS endpoint with plain boto3.
"""

from __future__ import annotations

import os
from typing import Any

import boto3


def _table() -> Any:
    return boto3.resource("dynamodb").Table(os.environ["E2E_TABLE"])


def sqs_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    table = _table()
    for record in event["Records"]:
        table.update_item(
            Key={"tenant_id": "e2e", "order_id": record["body"]},
            UpdateExpression="ADD deliveries :one",
            ExpressionAttributeValues={":one": 1},
        )
        if "fail" in record["body"]:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def workflow_task(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _table().put_item(
        Item={
            "tenant_id": "e2e",
            "order_id": f"task-{event['n']}",
            "request_id": context.aws_request_id,
        }
    )
    return {"doubled": event["n"] * 2, "function": context.function_name}


#: Jobs whose message is on its first delivery in the current invocation.
_FIRST_DELIVERY: set[str] = set()
_patched = False


def _crash_after_the_model_ran() -> None:
    """Kill the worker process between the model call and recording the step."""
    from stratus.jobs import DynamoJobStore

    original = DynamoJobStore.record_step

    def record_step(self: DynamoJobStore, job_id: str, step: str, **kwargs: Any) -> bool:
        job = self.get(job_id) or {}
        if job_id in _FIRST_DELIVERY and "CRASH-ONCE" in str(job.get("input")):
            os._exit(1)  # no cleanup, no response: the poller sees Runtime.ExitError
        return original(self, job_id, step, **kwargs)

    DynamoJobStore.record_step = record_step  # type: ignore[method-assign,assignment]


def crash_once_worker(event: dict[str, Any], context: Any) -> Any:
    """The real job worker, except that a job whose input says CRASH-ONCE dies on delivery 1."""
    import json

    from functions.handlers.worker import lambda_handler

    global _patched
    if not _patched:
        _crash_after_the_model_ran()
        _patched = True
    _FIRST_DELIVERY.clear()
    for record in event.get("Records", []):
        if record["attributes"].get("ApproximateReceiveCount") == "1":
            _FIRST_DELIVERY.add(json.loads(record["body"])["job_id"])
    return lambda_handler(event, context)

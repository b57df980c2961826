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

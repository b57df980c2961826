"""Baseline: the smallest Powertools handler (Logger + Tracer + Metrics), nothing else.

The floor for any handler that uses Powertools observability: the cold start of
a Stratus handler can only be compared fairly with this, not with an empty file.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="bench")
tracer = Tracer(service="bench")
metrics = Metrics(namespace="StratusBench", service="bench")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": "{}"}

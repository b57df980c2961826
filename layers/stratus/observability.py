"""The Powertools Logger, Tracer and Metrics objects, defined once.

Powertools reads its own ``POWERTOOLS_*`` variables when these are built; the
CDK stack and the local cloud set them. Every module logs through ``logger`` so
that the Lambda context and the correlation id appear on every line.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "stratus"
NAMESPACE = "Stratus"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

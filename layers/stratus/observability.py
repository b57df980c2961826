"""The Powertools Logger, Tracer and Metrics objects, defined once.

Powertools reads its own ``POWERTOOLS_*`` variables when these are built; the
CDK stack and the local cloud set them. Every module logs through ``logger`` so
that the Lambda context and the correlation id appear on every line.
"""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

from stratus.guardrails.logs import RedactingFilter

SERVICE = "stratus"
NAMESPACE = "Stratus"

logger = Logger(service=SERVICE)
# PII in a log line (a reply, an error quoting the model) is redacted (stratus.guardrails.logs).
logger.addFilter(RedactingFilter())
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# A request's own metric documents are separate (EphemeralMetrics, printed after the
# answer: stratus.task_metrics), so this object is often empty when ``log_metrics``
# flushes it: that is not worth a UserWarning on stderr in every instance's log.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


def set_agent_dimension(agent: str) -> None:
    """Make ``agent`` a default dimension of every metric this function emits.

    Set once per process: Powertools re-adds default dimensions after each
    flush, so setting it again on every invocation only triggers its warning.
    """
    if metrics.default_dimensions.get("agent") == agent:
        return
    metrics.default_dimensions.pop("agent", None)
    metrics.dimension_set.pop("agent", None)
    metrics.set_default_dimensions(agent=agent)

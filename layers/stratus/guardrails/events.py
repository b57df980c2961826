"""What a guardrail decision leaves behind: metrics and audit events.

Metrics (namespace ``Stratus``, dimensions ``agent`` and ``category``):
``GuardrailBlocks`` and ``GuardrailFlags`` per screened text that was blocked or
flagged, ``Redactions`` per placeholder written (category: ``email``, ``card``...).
Each is one EMF document of its own (the function's shared metric set carries other
dimensions). Blocks and flags are also audited (``guardrail.blocked``,
``guardrail.flagged``) on the runner's audit trail (buffered, flushed once per
request: no extra DynamoDB round trip); without one they are a structured log line.
Never raises: a metric or an audit event never fails the request it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stratus.observability import NAMESPACE, logger

if TYPE_CHECKING:
    from stratus.agents import ToolContext
    from stratus.audit import AuditTrail

BLOCKS = "GuardrailBlocks"
FLAGS = "GuardrailFlags"
REDACTIONS = "Redactions"
BLOCKED = "guardrail.blocked"
FLAGGED = "guardrail.flagged"


def emit(metric: str, agent: str, counts: Mapping[str, int]) -> None:
    """``metric`` per category of ``counts`` (one EMF document per category)."""
    if not counts:
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    try:
        for category, value in counts.items():
            emf = EphemeralMetrics(namespace=NAMESPACE, service="")
            emf.add_dimension(name="agent", value=agent)
            emf.add_dimension(name="category", value=category)
            emf.add_metric(name=metric, unit=MetricUnit.Count, value=value)
            emf.flush_metrics()
    except Exception:
        logger.exception("emitting a guardrail metric failed")


def record(
    audit: AuditTrail | None,
    ctx: ToolContext,
    *,
    blocked: bool,
    details: dict[str, Any],
) -> None:
    """One ``guardrail.blocked`` / ``guardrail.flagged`` event of the current request."""
    kind = BLOCKED if blocked else FLAGGED
    emit(
        BLOCKS if blocked else FLAGS,
        str(details.get("agent", ctx.agent)),
        {str(details.get("category", "unknown")): 1},
    )
    try:
        if audit is None:
            logger.warning(
                "guardrail", extra={"audit_type": kind, "tenant_id": ctx.tenant_id, **details}
            )
            return
        audit.record(
            ctx.tenant_id,
            kind,
            actor=ctx.key_id or "system",
            request_id=ctx.request_id or None,
            details=details,
        )
    except Exception:
        logger.exception("recording a guardrail event failed")

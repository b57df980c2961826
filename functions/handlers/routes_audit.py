"""The caller tenant's audit trail (platform function; scope ``audit:read``).

``GET /v1/audit?since=&type=&limit=&cursor=`` lists the tenant's events, oldest
first from ``since`` (ISO 8601; default 24 hours back), only the ``type`` s asked
for (``type`` repeated, or a comma list; each one of :data:`stratus.audit.AUDIT_TYPES`),
``limit`` 1..200 (default 50) per page, ``next_cursor`` for the next one. Only the
caller's tenant is ever read; another tenant's (or a made-up) cursor answers
``404 invalid_cursor``, a bad ``since`` or ``type`` ``422 validation_error``, a key
without ``audit:read`` ``403 forbidden``. DynamoDB round trips: 1 query (up to 4
when a ``type`` filter skips many items). The domain is :mod:`stratus.audit`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel

from functions.handlers.common import ERROR_RESPONSES, FORBIDDEN_RESPONSE, require_scope, tenant_id
from stratus import composition
from stratus.audit import AUDIT_TYPES, DEFAULT_LIMIT, MAX_LIMIT, list_events
from stratus.errors import ValidationFailed

router = Router()

AUDIT_SCOPE = "audit:read"


class AuditEventView(BaseModel):
    event_id: str
    tenant_id: str
    #: One of ``stratus.audit.AUDIT_TYPES``.
    type: str
    #: ISO 8601, UTC.
    at: str
    #: A key id, ``operator`` (the CLI) or ``system``.
    actor: str
    request_id: str | None = None
    details: dict[str, Any]


class AuditPage(BaseModel):
    events: list[AuditEventView]
    #: Pass as ``cursor`` for the next page; None on the last one.
    next_cursor: str | None
    #: Where this listing starts (the ``since`` given, or 24 hours back).
    since: str


#: The shape of ``since`` (what a calendar check then refuses, e.g. month 13, is a 422 too).
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            "invalid request: since must be an ISO 8601 time, e.g. 2026-12-01T00:00:00Z",
            details={"fields": [{"field": "query.since", "message": "not an ISO 8601 time"}]},
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _types(values: list[str] | None) -> tuple[str, ...]:
    wanted = [t.strip() for value in values or () for t in value.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(AUDIT_TYPES))
    if unknown:
        raise ValidationFailed(
            f"invalid request: unknown audit type {unknown[0]!r}",
            details={
                "fields": [{"field": "query.type", "message": f"unknown: {', '.join(unknown)}"}],
                "types": list(AUDIT_TYPES),
            },
        )
    return tuple(dict.fromkeys(wanted))


@router.get(
    "/v1/audit",
    summary="The caller tenant's audit trail, oldest first",
    responses={
        200: {
            "description": "A page of audit events",
            "content": {"application/json": {"model": AuditPage}},
        },
        **ERROR_RESPONSES,
        **FORBIDDEN_RESPONSE,
    },
)
def list_audit(
    since: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=ISO_TIME,
            description="ISO 8601 date or time (UTC when it has no offset).",
        ),
    ] = None,
    type: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Response[str]:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    tenant = tenant_id(event)
    require_scope(event, AUDIT_SCOPE)
    page = list_events(
        composition.current().audit,
        tenant,
        since=_since(since),
        types=_types(type),
        limit=limit,
        cursor=cursor,
    )
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(AuditPage.model_validate(page).model_dump(mode="json")),
    )

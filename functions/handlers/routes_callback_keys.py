"""The tenant's callback signing key (platform function; scope ``admin``).

``POST /v1/callback-keys/rotate {"grace_s"?: N}`` -> ``201`` with the tenant's new
signing key: ``{"kid", "secret", "created_at", "previous": [{"kid", "valid_until"}]}``.
The secret is in this answer only (never in a log, a job or an audit event). The
new key signs the tenant's callbacks from now on; the previous ones keep verifying
for ``grace_s`` seconds (default 86400, at most 30 days; ``0`` retires them now).
A tenant without a key of its own (created before per-tenant keys, signed with the
stack-wide fallback key) gets its first one. Audited as ``callback_key.rotated``
(actor: the calling key's id; details: the key ids only).

DynamoDB round trips: 2 + one per previous key (the tenant's keys, the new key's
conditional put, each previous key's retirement), plus the request's audit write.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel, ConfigDict, Field

from functions.handlers.common import (
    ERROR_RESPONSES,
    FORBIDDEN_RESPONSE,
    caller,
    request_id,
    require_scope,
)
from stratus import composition
from stratus.errors import ValidationFailed
from stratus.signing_keys import DEFAULT_GRACE_S, MAX_GRACE_S

router = Router()

CALLBACK_KEYS_SCOPE = "admin"


class RotateCallbackKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: int = Field(
        default=DEFAULT_GRACE_S,
        ge=0,
        le=MAX_GRACE_S,
        strict=True,
        description="How long the previous keys keep verifying (seconds; default 86400).",
    )


class PreviousKey(BaseModel):
    kid: str
    #: Unix seconds from which the key no longer verifies.
    valid_until: float | None


class RotatedCallbackKey(BaseModel):
    #: The key id, in every signature header (``kid=``) made with this key.
    kid: str
    #: The HMAC-SHA256 secret: shown in this answer only.
    secret: str
    created_at: float
    previous: list[PreviousKey]


RESPONSES: dict[int, Any] = {
    201: {
        "description": "The new signing key, shown this once",
        "content": {"application/json": {"model": RotatedCallbackKey}},
    },
    **ERROR_RESPONSES,
    **FORBIDDEN_RESPONSE,
}


@router.post(
    "/v1/callback-keys/rotate",
    summary="Rotate the tenant's callback signing key (both keys verify during the grace)",
    responses=RESPONSES,
)
def rotate_callback_key(
    body: Annotated[RotateCallbackKeyRequest | None, Body()] = None,
) -> Response[str]:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    who = caller(event)
    require_scope(event, CALLBACK_KEYS_SCOPE)
    if body is None and (event.body or "").strip() not in ("", "null"):
        # Powertools maps a non-object body (a list, a number) to "no body": refuse it.
        raise ValidationFailed(
            "invalid request: the body must be a JSON object",
            details={"fields": [{"field": "body", "message": "not an object"}]},
        )
    grace = body.grace_s if body is not None else DEFAULT_GRACE_S
    runtime = composition.current()
    key, previous = runtime.signing_keys.rotate(who.tenant_id, grace)
    runtime.audit.record(
        who.tenant_id,
        "callback_key.rotated",
        actor=who.key_id or "unknown",
        request_id=request_id(event) or None,
        details={"kid": key.kid, "previous": [p.kid for p in previous], "grace_s": grace},
    )
    answer = RotatedCallbackKey(
        kid=key.kid,
        secret=key.secret,
        created_at=key.created_at,
        previous=[PreviousKey(kid=p.kid, valid_until=p.valid_until) for p in previous],
    )
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(answer.model_dump(mode="json")),
    )

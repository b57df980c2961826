"""The caller tenant's API keys (platform function; scope ``admin``).

* ``POST /v1/keys {"scopes": [...], "role"?, "customer_id"?, "expires_at"?}`` ->
  ``201`` with the new ``key`` (shown this once) and its ``key_id``;
* ``GET /v1/keys`` -> ``{"keys": [...]}`` (never a key or its hash);
* ``DELETE /v1/keys/{key_id}`` -> ``204`` (revoked; revoking again is ``204`` too);
* ``POST /v1/keys/{key_id}/rotate {"grace_s"?}`` -> ``201``, a new key with the old
  one's scopes, role and customer; the old key keeps working for ``grace_s`` (default
  24 h, at most 30 days), then stops.

A key may not grant what its creator lacks: a scope the calling key does not hold is
``403 forbidden`` (``details.missing_scope``), and a key bound to an end customer
makes only keys bound to the same customer (``403 forbidden``, ``details.customer_id``).
Another tenant's key, or an unknown one, is ``404 not_found``. Every change is
audited (``key.created``, ``key.rotated``, ``key.revoked``; actor: the calling key's
id). A revoked or rotated-out key stops within the authorizer cache window (60 s).

DynamoDB round trips: create 2 (the tenant, a transaction); list 1 query page;
revoke 2 (the tenant's keys, an update); rotate 3 (the keys listed twice, a
transaction); plus the request's one audit write.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.handlers.common import (
    ERROR_RESPONSES,
    FORBIDDEN_RESPONSE,
    Caller,
    Forbidden,
    caller,
    request_id,
    require_scope,
)
from stratus import composition
from stratus.errors import ValidationFailed
from stratus.tenant_keys import (
    CUSTOMER_PATTERN,
    MAX_GRACE_S,
    ROLE_PATTERN,
    KeyInfo,
    key_scopes,
)

router = Router()

KEYS_SCOPE = "admin"
KEY_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(
        max_length=16, description="What the key may do: invoke, sessions, jobs, ..."
    )
    role: str | None = Field(default=None, pattern=ROLE_PATTERN.pattern)
    customer_id: str | None = Field(default=None, pattern=CUSTOMER_PATTERN.pattern)
    #: ISO 8601; without a zone it is UTC. Must be in the future.
    expires_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return list(key_scopes(value))


class RotateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GRACE_S,
        strict=True,
        description="How long the old key keeps working (seconds; default 86400).",
    )


class KeyList(BaseModel):
    keys: list[KeyInfo]


class CreatedKey(KeyInfo):
    #: The key itself: shown in this answer only (only its hash is stored).
    key: str


class RotatedKey(CreatedKey):
    #: The rotated key: its id and when it stops working.
    replaces: str
    replaced_key_expires_at: str | None


def _responses(status: int, model: type[BaseModel], text: str) -> dict[int, Any]:
    return {
        status: {"description": text, "content": {"application/json": {"model": model}}},
        **ERROR_RESPONSES,
        **FORBIDDEN_RESPONSE,
    }


def _admin() -> tuple[APIGatewayProxyEvent, Caller]:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    who = caller(event)
    require_scope(event, KEYS_SCOPE)
    return event, who


def _may_grant(who: Caller, scopes: tuple[str, ...], customer_id: str | None) -> None:
    lacking = [s for s in scopes if s not in who.scopes]
    if lacking:
        raise Forbidden(
            f"this key cannot grant the scope {lacking[0]!r}: it does not hold it",
            details={"missing_scope": lacking[0]},
        )
    if who.customer_id is not None and customer_id != who.customer_id:
        raise Forbidden(
            "a key bound to an end customer makes only keys bound to the same customer",
            details={"customer_id": who.customer_id},
        )


def _audit(event: APIGatewayProxyEvent, who: Caller, type: str, details: dict[str, Any]) -> None:
    composition.current().audit.record(
        who.tenant_id,
        type,
        actor=who.key_id or "unknown",
        request_id=request_id(event) or None,
        details=details,
    )


def _json(status: int, model: BaseModel) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(model.model_dump(mode="json")),
    )


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@router.post(
    "/v1/keys",
    summary="Create an API key (shown once) with the given scopes, role and customer",
    responses=_responses(201, CreatedKey, "The new key, shown this once"),
)
def create_key(body: Annotated[CreateKeyRequest, Body()]) -> Response[str]:
    event, who = _admin()
    scopes = key_scopes(body.scopes)
    customer = body.customer_id if body.customer_id is not None else who.customer_id
    _may_grant(who, scopes, customer)
    try:
        info, key = composition.current().tenants.create_key(
            who.tenant_id,
            scopes,
            role=body.role,
            customer_id=customer,
            expires_at=_epoch(body.expires_at) if body.expires_at is not None else None,
        )
    except ValueError as problem:
        raise ValidationFailed(f"invalid request: {problem}") from None
    _audit(
        event,
        who,
        "key.created",
        {
            "key_id": info.key_id,
            "scopes": list(info.scopes),
            "role": info.role,
            "customer_id": info.customer_id,
            "expires_at": info.expires_at,
        },
    )
    return _json(201, CreatedKey(**info.model_dump(), key=key))


@router.get(
    "/v1/keys",
    summary="The tenant's API keys (never a key or its hash)",
    responses=_responses(200, KeyList, "The keys, oldest first"),
)
def list_keys() -> Response[str]:
    _, who = _admin()
    return _json(200, KeyList(keys=composition.current().tenants.list_keys(who.tenant_id)))


@router.delete(
    "/v1/keys/<key_id>",
    summary="Revoke an API key (it stops within the authorizer cache window, 60 s)",
    responses={204: {"description": "Revoked"}, **ERROR_RESPONSES, **FORBIDDEN_RESPONSE},
)
def revoke_key(key_id: KEY_ID) -> Response[str]:
    event, who = _admin()
    revoked = composition.current().tenants.revoke_key(who.tenant_id, key_id)
    _audit(event, who, "key.revoked", {"key_id": revoked.key_id})
    return Response(status_code=204, body="")


def _object_or_empty(event: APIGatewayProxyEvent) -> None:
    """The optional rotate body is a JSON object or nothing (Powertools lets an optional
    body of another JSON type through as None)."""
    text = (event.body or "").strip()
    if not text:
        return
    try:
        parsed = json.loads(text)
    except ValueError:
        return  # Powertools has answered invalid JSON already
    if parsed is not None and not isinstance(parsed, dict):
        raise ValidationFailed(
            "invalid request: body must be a JSON object",
            details={"fields": [{"field": "body", "message": "not an object", "type": "type"}]},
        )


@router.post(
    "/v1/keys/<key_id>/rotate",
    summary="Rotate an API key: a new key now, the old one valid for a grace period",
    responses=_responses(201, RotatedKey, "The new key, shown this once"),
)
def rotate_key(
    key_id: KEY_ID, body: Annotated[RotateKeyRequest | None, Body()] = None
) -> Response[str]:
    event, who = _admin()
    _object_or_empty(event)
    tenants = composition.current().tenants
    for info in tenants.list_keys(who.tenant_id):
        if info.key_id == key_id:
            _may_grant(who, info.scopes, info.customer_id)
    grace = body.grace_s if body is not None else None
    try:
        rotation = tenants.rotate_key(who.tenant_id, key_id, grace)
    except ValueError as problem:
        raise ValidationFailed(f"invalid request: {problem}") from None
    _audit(
        event,
        who,
        "key.rotated",
        {
            "key_id": rotation.old.key_id,
            "new_key_id": rotation.new.key_id,
            "old_key_expires_at": rotation.old.expires_at,
        },
    )
    return _json(
        201,
        RotatedKey(
            **rotation.new.model_dump(),
            key=rotation.key,
            replaces=rotation.old.key_id,
            replaced_key_expires_at=rotation.old.expires_at,
        ),
    )

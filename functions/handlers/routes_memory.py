"""Long-term memory of the caller's tenant (platform function; scope ``sessions`` or
``admin``), issue 18.

* ``GET /v1/memory?q=&user=&limit=`` searches the memories of one end customer
  (``user``; none: the tenant's own, customer ``-``), closest to ``q`` first, ``limit``
  1..100 (default 10); without ``q``, the newest. The answer carries the embedding
  call's ``usage`` and ``cost_usd``.
* ``DELETE /v1/memory?user=`` forgets one end customer (a data-subject request): every
  vector of that tenant and customer; ``{"deleted": n, "user": ...}``. Audited
  ``memory.forgotten``.
* ``DELETE /v1/memory/{id}`` deletes one memory: ``204``; another tenant's, another
  customer's (for a key bound to one) or an unknown id is ``404 memory_not_found``.
  Audited ``memory.deleted``.

The owner comes from the authenticated key only: a key bound to an end customer may name
only its own (``user`` omitted or equal), anything else is ``403 forbidden``
(``details.customer_id``). A bad parameter is ``422 validation_error``. The domain is
:class:`stratus.memory.service.MemoryService`. Round trips: search: the embedding call's
two DynamoDB waves + 1 ``QueryVectors``; forget: one ``ListVectors`` per 1,000 vectors
of the index + one ``DeleteVectors`` per 500 deleted; delete: 1 ``GetVectors`` + 1
``DeleteVectors``; plus the request's one audit write.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel

from functions.handlers.common import (
    ERROR_RESPONSES,
    FORBIDDEN_RESPONSE,
    Caller,
    Forbidden,
    caller,
    deadline,
    request_id,
    require_scope,
)
from stratus import composition
from stratus.errors import ValidationFailed
from stratus.memory.store import Owner

router = Router()

MEMORY_SCOPES = ("sessions", "admin")
USER_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
USER = Annotated[
    str | None,
    Query(min_length=1, max_length=128, pattern=USER_PATTERN, description="End-customer id."),
]


class MemoryView(BaseModel):
    id: str
    text: str
    #: ``remembered``, ``fact`` or ``summary``.
    kind: str
    agent: str
    user: str | None
    session_id: str | None
    created_at: str
    expires_at: str
    score: float | None = None


class MemorySearch(BaseModel):
    memories: list[MemoryView]
    user: str | None
    usage: dict[str, int]
    cost_usd: float
    fake_model: bool = False


class MemoryForgotten(BaseModel):
    deleted: int
    user: str | None


def _caller() -> tuple[APIGatewayProxyEvent, Caller]:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    require_scope(event, *MEMORY_SCOPES)
    return event, caller(event)


def _owner(who: Caller, user: str | None) -> Owner:
    """Whose memories: a bound key's own customer only; an unbound key any of its tenant."""
    if who.customer_id is not None:
        if user is not None and user != who.customer_id:
            raise Forbidden(
                "this key is bound to another end customer",
                details={"customer_id": who.customer_id},
            )
        return Owner.of(who.tenant_id, who.customer_id)
    return Owner.of(who.tenant_id, user)


def _user(owner: Owner) -> str | None:
    return None if owner.customer_id == Owner(owner.tenant_id).customer_id else owner.customer_id


def _audit(event: APIGatewayProxyEvent, who: Caller, type: str, details: dict[str, Any]) -> None:
    composition.current().audit.record(
        who.tenant_id,
        type,
        actor=who.key_id or "unknown",
        request_id=request_id(event) or None,
        details=details,
    )


@router.get(
    "/v1/memory",
    summary="Search an end customer's long-term memories",
    responses={
        200: {
            "description": "Memories, closest first",
            "content": {"application/json": {"model": MemorySearch}},
        },
        **ERROR_RESPONSES,
        **FORBIDDEN_RESPONSE,
    },
)
def search_memory(
    q: Annotated[str | None, Query(min_length=1, max_length=2_000)] = None,
    user: USER = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    event, who = _caller()
    owner = _owner(who, user)
    if q is not None and not q.strip():
        raise ValidationFailed(
            "invalid request: q must not be blank",
            details={"fields": [{"field": "query.q", "message": "blank"}]},
        )
    found = composition.current().memory.find(
        owner,
        q,
        limit=limit,
        request_id=request_id(event),
        deadline=deadline(router.lambda_context),
    )
    return {**found, "user": _user(owner)}


@router.delete(
    "/v1/memory",
    summary="Forget one end customer: delete every memory of that customer",
    responses={
        200: {
            "description": "How many memories were deleted",
            "content": {"application/json": {"model": MemoryForgotten}},
        },
        **ERROR_RESPONSES,
        **FORBIDDEN_RESPONSE,
    },
)
def forget_user(
    user: Annotated[
        str,
        Query(
            min_length=1,
            max_length=128,
            pattern=USER_PATTERN,
            description="The end customer to forget (a key bound to one names its own).",
        ),
    ],
) -> dict[str, Any]:
    event, who = _caller()
    owner = _owner(who, user)
    deleted = composition.current().memory.forget(owner)
    _audit(event, who, "memory.forgotten", {"user": _user(owner), "deleted": deleted})
    return {"deleted": deleted, "user": _user(owner)}


@router.delete(
    "/v1/memory/<memory_id>",
    summary="Delete one memory",
    responses={204: {"description": "Deleted"}, **ERROR_RESPONSES, **FORBIDDEN_RESPONSE},
)
def delete_memory(
    memory_id: Annotated[str, Path(min_length=1, max_length=128)],
) -> Response[str]:
    event, who = _caller()
    gone = composition.current().memory.delete(
        who.tenant_id, memory_id, customer_id=who.customer_id
    )
    details = {"memory_id": gone.id, "user": _user(Owner.of(who.tenant_id, gone.customer_id))}
    _audit(event, who, "memory.deleted", {**details, "kind": gone.kind})
    return Response(status_code=204, body="")

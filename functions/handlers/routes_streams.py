"""``POST /v1/stream-tickets``: a short-lived, single-use ticket to open a WebSocket.

Served by the platform function. Any valid key may ask (the ticket carries that key's
tenant, key id, scopes, role and end customer; what the connection may do is decided by
those scopes, frame by frame). The client connects with ``wss://...?ticket=<ticket>``
within 60 s, so tenant keys never sit in URLs or access logs. One PutItem.
"""

from __future__ import annotations

from typing import cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel, Field

from functions.handlers.common import ERROR_RESPONSES, caller
from stratus import composition
from stratus.streaming import StreamCaller

router = Router()


class StreamTicketResponse(BaseModel):
    ticket: str = Field(description="Pass as ?ticket= when opening the WebSocket (single use).")
    expires_at: str = Field(description="When the ticket stops working (ISO 8601, UTC; 60 s).")


@router.post(
    "/v1/stream-tickets",
    summary="A single-use, 60 s ticket to open the WebSocket streaming API",
    responses={
        201: {
            "description": "The ticket",
            "content": {"application/json": {"model": StreamTicketResponse}},
        },
        **ERROR_RESPONSES,
    },
)
def create_stream_ticket() -> Response[str]:
    who = caller(cast(APIGatewayProxyEvent, router.current_event))
    ticket, expires_at = composition.current().stream_tickets.issue(
        StreamCaller(
            tenant_id=who.tenant_id,
            key_id=who.key_id,
            scopes=tuple(sorted(who.scopes)),
            role=who.role,
            customer_id=who.customer_id,
            tier=who.tier,
        )
    )
    body = StreamTicketResponse(ticket=ticket, expires_at=expires_at)
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(),
    )

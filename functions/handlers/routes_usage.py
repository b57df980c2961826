"""``GET /v1/usage?period=day|month``: the caller tenant's spend, by agent.

Served by the platform function from the usage the tenant's budget item for the
period carries (one read; ``stratus.rollups``); the tenant comes from the
authorizer, never from the request, so a tenant only ever sees its own spend.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel

from functions.handlers.common import ERROR_RESPONSES, require_scope, tenant_id
from stratus import composition

router = Router()


class AgentUsage(BaseModel):
    calls: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: str
    cache_hits: int
    saved_usd: str
    ledger_hits: int


class UsageResponse(BaseModel):
    tenant_id: str
    period: Literal["day", "month"]
    #: The UTC day (``2026-11-21``) or month (``2026-11``) reported.
    key: str
    cost_usd: str
    agents: dict[str, AgentUsage]


@router.get(
    "/v1/usage",
    summary="The caller tenant's spend in the current day or month, by agent",
    responses={
        200: {
            "description": "Spend by agent",
            "content": {"application/json": {"model": UsageResponse}},
        },
        **ERROR_RESPONSES,
    },
)
def usage(period: Annotated[Literal["day", "month"], Query()] = "day") -> Response[str]:
    event = cast(APIGatewayProxyEvent, router.current_event)
    require_scope(event, "usage:read")
    tenant = tenant_id(event)
    body: dict[str, Any] = composition.current().rollups.tenant_usage(tenant, period)
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(UsageResponse.model_validate(body).model_dump(mode="json")),
    )

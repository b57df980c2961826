"""The Lambda REQUEST authorizer: ``Authorization: Bearer <key>`` → tenant.

A valid key yields an Allow policy for the whole API (so API Gateway can cache
the decision per key) and puts ``tenant_id``, ``tenant_name`` and ``scopes`` (the
key's scopes, space-separated: context values are strings) in the authorizer
context, where the handlers read them (``functions.handlers.common.require_scope``).
Anything else raises ``Unauthorized``, which API Gateway turns into a 401; the key
itself is never logged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus import composition
from stratus.observability import logger
from stratus.tenants import bearer_token


class UnauthorizedError(Exception):
    """API Gateway maps exactly this message to 401 Unauthorized."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayAuthorizerRequestEvent(event)
    key = bearer_token(request.headers.get("Authorization"))
    tenant = composition.current().tenants.authenticate(key) if key else None
    if tenant is None:
        logger.info("request denied", extra={"reason": "missing key" if key is None else "bad key"})
        raise UnauthorizedError()
    arn = request.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=tenant.tenant_id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context={
            "tenant_id": tenant.tenant_id,
            "tenant_name": tenant.name,
            "scopes": " ".join(tenant.scopes),
        },
    )
    policy.allow_all_routes()
    logger.info("request allowed", extra={"tenant_id": tenant.tenant_id})
    return policy.asdict()

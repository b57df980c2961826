"""The Lambda REQUEST authorizer: ``Authorization: Bearer <key>`` → tenant.

A valid key yields an Allow policy for the whole API (so API Gateway can cache
the decision per key, ``authorizer_cache_s``, 60 s by default) and puts
``tenant_id``, ``tenant_name``, ``key_id``, ``scopes`` (space-separated: context
values are strings), ``role`` and ``customer_id`` (empty when the key has none) in
the authorizer context, with the tenant's ``tier`` and ``home_region`` (empty when
none), where the handlers read them (``functions.handlers.common.caller`` /
``require_scope``). Anything else raises ``Unauthorized``, which API Gateway turns into a
401; the key itself is never logged.

**Residency**: a key naming a home region other than the one this function serves
(``Settings.region``, from Lambda's ``AWS_REGION``) gets a Deny policy whose context
carries ``error_code=wrong_region`` and ``home_region``; the API's ACCESS_DENIED gateway
response turns it into a 403 in the error shape (``infra.topology.gateway_errors``). The
decision needs the key alone: no table of another region is read, nor this region's.

A known key that is refused (revoked, expired, its tenant suspended) is audited in its
tenant's trail as ``request.refused`` with the ``reason``.

DynamoDB round trips: one GetItem of the key item (a suspension is denormalised
onto the key items, see ``stratus.tenants``); a refusal of a known key adds one
audit write.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus import composition, correlation
from stratus.observability import logger
from stratus.tenant_keys import WrongRegion, wrong_region
from stratus.tenants import bearer_token


class UnauthorizedError(Exception):
    """API Gateway maps exactly this message to 401 Unauthorized."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayAuthorizerRequestEvent(event)
    cid = correlation.header_value(event.get("headers"), event.get("multiValueHeaders"))
    if cid:  # the caller's id on the authorizer's lines too (the API function generates)
        correlation.bind(cid)
    key = bearer_token(request.headers.get("Authorization"))
    runtime = composition.current()
    if key is None:
        logger.info("request denied", extra={"reason": "missing key"})
        raise UnauthorizedError()
    home_region = wrong_region(key, runtime.settings.region)
    if home_region is not None:
        logger.info("request denied", extra={"reason": "wrong_region", "home_region": home_region})
        return _deny(request, WrongRegion.code, home_region=home_region)
    check = runtime.tenants.check(key)
    tenant = check.tenant
    if tenant is None:
        logger.info(
            "request denied",
            extra={"reason": check.reason, "tenant_id": check.tenant_id, "key_id": check.key_id},
        )
        if check.tenant_id:  # a known key: the refusal goes to its tenant's trail
            runtime.audit.record_now(
                check.tenant_id,
                "request.refused",
                actor=check.key_id or "unknown",
                request_id=str(event.get("requestContext", {}).get("requestId") or "") or None,
                details={
                    "reason": check.reason,
                    "route": f"{request.http_method} {request.resource}",
                },
            )
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
            "key_id": tenant.key_id or "",
            "scopes": " ".join(tenant.scopes),
            "role": tenant.role or "",
            "customer_id": tenant.customer_id or "",
            "tier": tenant.tier,
            "home_region": tenant.home_region or "",
        },
    )
    policy.allow_all_routes()
    logger.info("request allowed", extra={"tenant_id": tenant.tenant_id, "key_id": tenant.key_id})
    return policy.asdict()


def _deny(request: APIGatewayAuthorizerRequestEvent, code: str, **context: str) -> dict[str, Any]:
    """A Deny for the whole API whose context names why (the 403 gateway response reads
    ``error_code`` and the rest from ``$context.authorizer``). The principal is the refusal,
    never a tenant: nothing of the tenant is known here."""
    arn = request.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=code,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context={"error_code": code, **context},
    )
    policy.deny_all_routes()
    return policy.asdict()

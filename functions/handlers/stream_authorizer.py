"""The WebSocket ``$connect`` REQUEST authorizer (issue 17).

Accepts EITHER ``Authorization: Bearer <key>`` (the REST authorizer's key resolution:
``runtime.tenants.check``, the same refusals, a known key's refusal audited) OR
``?ticket=<ticket>`` (``POST /v1/stream-tickets``: 60 s, single use, consumed by one
conditional delete). Answers the IAM policy document, Allow or Deny
``execute-api:Invoke`` on ``event["methodArn"]``, with the REST authorizer's context
keys (``tenant_id``, ``key_id``, ``scopes`` space-separated, ``role``, ``customer_id``),
which API Gateway passes in ``requestContext.authorizer`` of every later event of the
connection. No identity sources, no caching (a ticket is single use).

DynamoDB round trips: a key, one GetItem; a ticket, one conditional DeleteItem.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus import composition
from stratus.observability import logger
from stratus.streaming.store import StreamCaller
from stratus.tenant_keys import wrong_region
from stratus.tenants import bearer_token


def _header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _caller(event: dict[str, Any]) -> StreamCaller | None:
    runtime = composition.current()
    ticket = str((event.get("queryStringParameters") or {}).get("ticket") or "")
    key = bearer_token(_header(event, "authorization"))
    if key is None and ticket:
        found = runtime.stream_tickets.consume(ticket)
        if found is None:
            logger.info("stream connect denied", extra={"reason": "unknown or used ticket"})
        return found
    if key is None:
        logger.info("stream connect denied", extra={"reason": "missing key or ticket"})
        return None
    home = wrong_region(key, runtime.settings.region)
    if home is not None:  # the key names its home region: no table read (WebSocket APIs
        # have no gateway responses; the client sees the handshake refused)
        logger.info("stream connect denied", extra={"reason": "wrong_region", "home": home})
        return None
    check = runtime.tenants.check(key)
    tenant = check.tenant
    if tenant is None:
        logger.info("stream connect denied", extra={"reason": check.reason})
        if check.tenant_id:  # a known key: the refusal goes to its tenant's trail
            runtime.audit.record_now(
                check.tenant_id,
                "request.refused",
                actor=check.key_id or "unknown",
                request_id=str((event.get("requestContext") or {}).get("requestId") or "") or None,
                details={"reason": check.reason, "route": "WS $connect"},
            )
        return None
    return StreamCaller(
        tenant_id=tenant.tenant_id,
        key_id=tenant.key_id,
        scopes=tuple(tenant.scopes),
        role=tenant.role,
        customer_id=tenant.customer_id,
        tier=tenant.tier,
    )


def policy(event: dict[str, Any], caller: StreamCaller | None) -> dict[str, Any]:
    """The IAM policy document for ``$connect`` (Allow with the caller's context, or Deny)."""
    answer: dict[str, Any] = {
        "principalId": caller.tenant_id if caller else "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow" if caller else "Deny",
                    "Resource": str(event.get("methodArn") or "*"),
                }
            ],
        },
    }
    if caller is not None:
        answer["context"] = caller.context()
    return answer


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    caller = _caller(event)
    if caller is not None:
        logger.info("stream connect allowed", extra={"tenant_id": caller.tenant_id})
    return policy(event, caller)

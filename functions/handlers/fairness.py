"""A tenant's request rate, checked before a route runs (:mod:`stratus.tenant_limits`).

The routes that call a model (invoke, session messages) take the tenant's token in the
gateway's pre-call wave of their first model call (no round trip of their own); here
they are only refused from this process's memory of a refusal in the current window.
Every other authenticated route takes here: one conditional write. The public routes
(health, OpenAPI) have no tenant: API Gateway throttles them per method instead.
"""

from __future__ import annotations

import re
from typing import Any

from stratus import composition
from stratus.errors import StratusError
from stratus.tenant_limits import TenantThrottled

#: Routes whose first model call takes the token inside the reservation's wave.
MODEL_ROUTES = re.compile(r"^/v1/agents/[^/]+/(?:invoke|sessions/[^/]+/messages)$")


def admit(event: dict[str, Any]) -> StratusError | None:
    """``429 throttled`` (``details.scope = "tenant"``) if the caller's tenant is over its
    request rate; None to let the request through."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    tenant = str(authorizer.get("tenant_id") or "")
    if not tenant:
        return None  # a public route, or a request the authorizer did not pass
    runtime = composition.current()
    limiter = runtime.tenant_limits
    if not limiter.enabled:
        return None
    path = str(event.get("path") or "")
    method = str(event.get("httpMethod") or "").upper()
    try:
        if method == "POST" and runtime.settings.agent and MODEL_ROUTES.match(path):
            limiter.check_cached(tenant)
        else:
            limiter.take(tenant)
    except TenantThrottled as throttled:
        return throttled
    return None

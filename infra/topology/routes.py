"""The REST API's routes: path, method, target function and auth.

Bodies are validated by the handlers, not by an API Gateway request model: a
gateway model answers ``BAD_REQUEST_BODY`` both for a body that is not JSON and
for one that does not match the schema, while the documented codes differ
(``400 invalid_json``, ``422 validation_error``). The local gateway does the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """One API Gateway method: path, verb, target function and auth."""

    method: str
    path: str
    target: str
    authorized: bool


def api_routes(agent_names: Iterable[str]) -> list[Route]:
    """The REST API: public platform routes, per-agent routes, the unknown-agent fallback.

    API Gateway prefers literal path segments over ``{agent}``, so a known agent
    reaches its own function and any other name reaches the platform's 404.
    """
    routes = [
        Route("GET", "/v1/health", "platform", authorized=False),
        Route("GET", "/v1/openapi.json", "platform", authorized=False),
        Route("GET", "/v1/usage", "platform", authorized=True),
        # Jobs are not agent-scoped: the platform function records and enqueues them.
        Route("POST", "/v1/jobs", "platform", authorized=True),
        Route("GET", "/v1/jobs/{job_id}", "platform", authorized=True),
        Route("POST", "/v1/jobs/{job_id}/cancel", "platform", authorized=True),
        Route("POST", "/v1/jobs/{job_id}/approval", "platform", authorized=True),
        # Human review of sampled answers (scope admin), served by the platform function.
        Route("GET", "/v1/reviews", "platform", authorized=True),
        Route("GET", "/v1/reviews/{review_id}", "platform", authorized=True),
        Route("POST", "/v1/reviews/{review_id}", "platform", authorized=True),
        # The tenant's audit trail (scope audit:read), served by the platform function.
        Route("GET", "/v1/audit", "platform", authorized=True),
        # The tenant's API keys (scope admin): create, list, revoke, rotate.
        Route("POST", "/v1/keys", "platform", authorized=True),
        Route("GET", "/v1/keys", "platform", authorized=True),
        Route("DELETE", "/v1/keys/{key_id}", "platform", authorized=True),
        Route("POST", "/v1/keys/{key_id}/rotate", "platform", authorized=True),
        # The tenant's callback signing key (scope admin): a new key, the old one in grace.
        Route("POST", "/v1/callback-keys/rotate", "platform", authorized=True),
        # WebSocket streaming (issue 17): a single-use connect ticket for any valid key.
        Route("POST", "/v1/stream-tickets", "platform", authorized=True),
        # Long-term memory (scope sessions or admin): search, forget a customer, delete one.
        Route("GET", "/v1/memory", "platform", authorized=True),
        Route("DELETE", "/v1/memory", "platform", authorized=True),
        Route("DELETE", "/v1/memory/{memory_id}", "platform", authorized=True),
    ]
    for name in sorted(agent_names):
        target = f"agent:{name}"
        routes.append(Route("POST", f"/v1/agents/{name}/invoke", target, authorized=True))
        routes.append(Route("ANY", f"/v1/agents/{name}/{{proxy+}}", target, authorized=True))
    routes.append(Route("ANY", "/v1/agents/{agent}/{proxy+}", "platform", authorized=True))
    return routes

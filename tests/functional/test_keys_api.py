"""Scopes on every route, and ``/v1/keys``, through the real authorizer and handlers on moto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from functions.handlers import api, authorizer
from stratus import composition
from stratus.tenants import SCOPES, TenantStore, hash_key, key_id_for
from tests.functional.test_authorizer_and_tenants import authorizer_event
from tests.support import FakeLambdaContext, api_event, call


def context_of(key: str) -> dict[str, Any]:
    context: Any = FakeLambdaContext()
    policy = authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), context)
    return {"principalId": policy["principalId"], **policy["context"]}


def request(key: str, method: str, path: str, body: Any = None) -> Any:
    event = api_event(None, path=path, method=method, body=body)
    event["requestContext"]["authorizer"] = context_of(key)
    return call(api.lambda_handler, event)


@pytest.fixture
def tenants(cloud: dict[str, Any]) -> TenantStore:
    return TenantStore(cloud["tables"]["tenants"])


def audit_events(tenant_id: str, type: str) -> list[dict[str, Any]]:
    events, _ = composition.current().audit.store.events(tenant_id, types=[type])  # type: ignore[union-attr]
    return [e.to_json() for e in events]


#: A request of each route family, with the scope it needs, served by which function.
FAMILIES: dict[str, tuple[str, list[tuple[str, str, Any]]]] = {
    "invoke": ("triage", [("POST", "/v1/agents/triage/invoke", {"input": "x" * 100_000})]),
    "sessions": (
        "support",
        [
            ("POST", "/v1/agents/support/sessions", {}),
            ("GET", "/v1/agents/support/sessions/nope", None),
            ("DELETE", "/v1/agents/support/sessions/nope", None),
            ("POST", "/v1/agents/support/sessions/nope/messages", {"message": "hi"}),
        ],
    ),
    "jobs": (
        "",
        [
            ("GET", "/v1/jobs/nope", None),
            ("POST", "/v1/jobs/nope/cancel", None),
            ("POST", "/v1/jobs", {"agent": "nosuchagent", "input": "hi"}),
        ],
    ),
    "jobs:approve": ("", [("POST", "/v1/jobs/nope/approval", {"approved": True})]),
    "usage:read": ("", [("GET", "/v1/usage", None)]),
    "audit:read": ("", [("GET", "/v1/audit", None)]),
    "admin": (
        "",
        [
            ("GET", "/v1/keys", None),
            ("POST", "/v1/keys", {"scopes": []}),
            ("DELETE", "/v1/keys/key_00000000000000000000", None),
            ("POST", "/v1/keys/key_00000000000000000000/rotate", {}),
            ("GET", "/v1/reviews", None),
        ],
    ),
}


@pytest.mark.parametrize("lacking", SCOPES)
def test_a_key_lacking_one_scope_is_refused_on_exactly_that_route_family(
    tenants: TenantStore, serve_agent: Callable[[str], None], lacking: str
) -> None:
    tenant, _ = tenants.create("acme")
    info, key = tenants.create_key(tenant.tenant_id, [s for s in SCOPES if s != lacking])
    for scope, (agent, calls) in FAMILIES.items():
        serve_agent(agent)
        for method, path, body in calls:
            reply = request(key, method, path, body)
            if scope == lacking:
                assert reply.status == 403, (method, path, reply.body)
                error = reply.body["error"]
                assert error["code"] == "forbidden" and error["request_id"]
                assert error["details"]["missing_scope"] == lacking
            else:
                assert reply.status not in (401, 403), (lacking, method, path, reply.body)
                assert reply.status < 500, (lacking, method, path, reply.body)
    serve_agent("")
    refused = audit_events(tenant.tenant_id, "request.refused")
    assert len(refused) == len(FAMILIES[lacking][1])
    assert {e["details"]["missing_scope"] for e in refused} == {lacking}
    assert {e["actor"] for e in refused} == {info.key_id}
    assert all(e["details"]["route"] for e in refused)


def test_approval_needs_jobs_approve_and_only_it(
    tenants: TenantStore, serve_agent: Callable[[str], None]
) -> None:
    serve_agent("")
    tenant, _ = tenants.create("acme")
    _, approver = tenants.create_key(tenant.tenant_id, ["jobs:approve"])
    _, jobs_only = tenants.create_key(tenant.tenant_id, ["jobs"])
    body = {"approved": True}
    assert request(approver, "POST", "/v1/jobs/nope/approval", body).status == 404
    refused = request(jobs_only, "POST", "/v1/jobs/nope/approval", body)
    assert refused.status == 403
    assert refused.body["error"]["details"]["missing_scope"] == "jobs:approve"
    assert request(approver, "GET", "/v1/jobs/nope").status == 403


def test_the_authorizer_context_carries_the_keys_identity(tenants: TenantStore) -> None:
    tenant, _ = tenants.create("acme")
    info, key = tenants.create_key(
        tenant.tenant_id, ["invoke"], role="support", customer_id="cust-9"
    )
    context = context_of(key)
    assert {k: context[k] for k in ("tenant_id", "tenant_name", "key_id", "scopes")} == {
        "tenant_id": tenant.tenant_id,
        "tenant_name": "acme",
        "key_id": info.key_id,
        "scopes": "invoke",
    }
    assert (context["role"], context["customer_id"]) == ("support", "cust-9")
    _, owner = tenants.create("globex")
    plain = context_of(owner)
    assert (plain["role"], plain["customer_id"], plain["scopes"]) == ("", "", " ".join(SCOPES))


def test_key_lifecycle_over_the_api(
    tenants: TenantStore, serve_agent: Callable[[str], None]
) -> None:
    serve_agent("")
    tenant, owner = tenants.create("acme")
    created = request(
        owner,
        "POST",
        "/v1/keys",
        {"scopes": ["jobs", "invoke"], "role": "ops", "expires_at": "2999-01-01T00:00:00Z"},
    )
    assert created.status == 201, created.body
    key, key_id = created.body["key"], created.body["key_id"]
    assert key_id == key_id_for(hash_key(key))
    assert (created.body["scopes"], created.body["role"]) == (["invoke", "jobs"], "ops")
    assert created.body["expires_at"] == "2999-01-01T00:00:00+00:00"
    assert context_of(key)["scopes"] == "invoke jobs"

    listed = request(owner, "GET", "/v1/keys")
    assert listed.status == 200
    assert {k["key_id"] for k in listed.body["keys"]} == {key_id, key_id_for(hash_key(owner))}
    text = str(listed.body)
    assert key not in text and hash_key(key) not in text and owner not in text

    rotated = request(owner, "POST", f"/v1/keys/{key_id}/rotate", {"grace_s": 600})
    assert rotated.status == 201, rotated.body
    assert rotated.body["replaces"] == key_id and rotated.body["replaced_key_expires_at"]
    assert (rotated.body["scopes"], rotated.body["role"]) == (["invoke", "jobs"], "ops")
    assert context_of(rotated.body["key"])["key_id"] == rotated.body["key_id"]
    assert context_of(key)["key_id"] == key_id  # within the grace period
    again = request(owner, "POST", f"/v1/keys/{key_id}/rotate", None)
    assert again.status == 409 and again.body["error"]["code"] == "key_not_active"

    assert request(owner, "DELETE", f"/v1/keys/{key_id}").status == 204
    assert request(owner, "DELETE", f"/v1/keys/{key_id}").status == 204  # idempotent
    with pytest.raises(authorizer.UnauthorizedError):
        context_of(key)
    actor = key_id_for(hash_key(owner))
    for type in ("key.created", "key.rotated", "key.revoked"):
        (first, *_) = audit_events(tenant.tenant_id, type)
        assert first["actor"] == actor and first["details"]["key_id"] == key_id
    for event in audit_events(tenant.tenant_id, "key.created"):
        assert key not in str(event)
    refused = audit_events(tenant.tenant_id, "request.refused")
    assert refused[-1]["details"]["reason"] == "key_revoked"


def test_another_tenants_key_is_not_found(
    tenants: TenantStore, serve_agent: Callable[[str], None]
) -> None:
    serve_agent("")
    _, owner = tenants.create("acme")
    other, _ = tenants.create("globex")
    theirs, their_key = tenants.create_key(other.tenant_id, ["invoke"])
    for method, path in (
        ("DELETE", f"/v1/keys/{theirs.key_id}"),
        ("POST", f"/v1/keys/{theirs.key_id}/rotate"),
        ("DELETE", "/v1/keys/key_00000000000000000000"),
    ):
        reply = request(owner, method, path, {} if method == "POST" else None)
        assert reply.status == 404, (method, path, reply.body)
        assert reply.body["error"]["code"] == "not_found"
    assert context_of(their_key)["tenant_id"] == other.tenant_id
    assert {k["key_id"] for k in request(owner, "GET", "/v1/keys").body["keys"]} == {
        key_id_for(hash_key(owner))
    }


def test_a_key_cannot_grant_what_its_creator_lacks(
    tenants: TenantStore, serve_agent: Callable[[str], None]
) -> None:
    serve_agent("")
    tenant, _ = tenants.create("acme")
    _, admin = tenants.create_key(tenant.tenant_id, ["admin", "invoke"])
    refused = request(admin, "POST", "/v1/keys", {"scopes": ["invoke", "jobs"]})
    assert refused.status == 403 and refused.body["error"]["details"]["missing_scope"] == "jobs"
    assert request(admin, "POST", "/v1/keys", {"scopes": ["invoke"]}).status == 201
    wide, _ = tenants.create_key(tenant.tenant_id, ["jobs"])
    rotate = request(admin, "POST", f"/v1/keys/{wide.key_id}/rotate", {})
    assert rotate.status == 403 and rotate.body["error"]["details"]["missing_scope"] == "jobs"
    _, bound = tenants.create_key(tenant.tenant_id, ["admin", "invoke"], customer_id="c1")
    inherits = request(bound, "POST", "/v1/keys", {"scopes": ["invoke"]})
    assert inherits.status == 201 and inherits.body["customer_id"] == "c1"
    other = request(bound, "POST", "/v1/keys", {"scopes": ["invoke"], "customer_id": "c2"})
    assert other.status == 403 and other.body["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["root"]},
        {"scopes": "invoke"},
        {},
        {"scopes": ["invoke"], "role": "has space"},
        {"scopes": ["invoke"], "expires_at": "2001-01-01T00:00:00Z"},
        {"scopes": ["invoke"], "expires_at": "soon"},
        {"scopes": ["invoke"], "extra": 1},
    ],
)
def test_bad_key_requests_are_422(
    tenants: TenantStore, serve_agent: Callable[[str], None], body: dict[str, Any]
) -> None:
    serve_agent("")
    _, owner = tenants.create("acme")
    reply = request(owner, "POST", "/v1/keys", body)
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "validation_error"


def test_a_rotate_body_that_is_not_an_object_is_422(
    tenants: TenantStore, serve_agent: Callable[[str], None]
) -> None:
    serve_agent("")
    tenant, owner = tenants.create("acme")
    info, _ = tenants.create_key(tenant.tenant_id, ["invoke"])
    for body in ([None, None], [], "x", 3):
        reply = request(owner, "POST", f"/v1/keys/{info.key_id}/rotate", body)
        assert reply.status == 422, (body, reply.body)
        assert reply.body["error"]["code"] == "validation_error"
    assert request(owner, "POST", f"/v1/keys/{info.key_id}/rotate", None).status == 201


@pytest.mark.parametrize("grace", [-1, 40 * 86_400, "60", True])
def test_a_bad_grace_period_is_422(
    tenants: TenantStore, serve_agent: Callable[[str], None], grace: Any
) -> None:
    serve_agent("")
    tenant, owner = tenants.create("acme")
    info, _ = tenants.create_key(tenant.tenant_id, ["invoke"])
    reply = request(owner, "POST", f"/v1/keys/{info.key_id}/rotate", {"grace_s": grace})
    assert reply.status == 422 and reply.body["error"]["code"] == "validation_error"


def test_a_suspended_tenant_is_refused_and_the_refusal_audited(tenants: TenantStore) -> None:
    tenant, owner = tenants.create("acme")
    assert context_of(owner)["tenant_id"] == tenant.tenant_id
    tenants.suspend(tenant.tenant_id)
    with pytest.raises(authorizer.UnauthorizedError):
        context_of(owner)
    (refused,) = audit_events(tenant.tenant_id, "request.refused")
    assert refused["details"]["reason"] == "tenant_suspended"
    assert refused["actor"] == key_id_for(hash_key(owner))
    tenants.resume(tenant.tenant_id)
    assert context_of(owner)["tenant_id"] == tenant.tenant_id


def test_the_authorizer_is_one_round_trip_and_a_refusal_one_more_write(
    tenants: TenantStore, serve_agent: Callable[[str], None]
) -> None:
    from bench.roundtrips import recording

    serve_agent("")
    tenant, owner = tenants.create("acme")
    _, plain = tenants.create_key(tenant.tenant_id, ["invoke"])
    context_of(owner)  # the runtime is built before counting
    with recording() as allowed:
        context_of(plain)
    assert [c.operation for c in allowed.of("dynamodb")] == ["GetItem"]
    tenants.suspend(tenant.tenant_id)
    with recording() as refused, pytest.raises(authorizer.UnauthorizedError):
        context_of(plain)
    assert [c.operation for c in refused.of("dynamodb")] == ["GetItem", "BatchWriteItem"]
    tenants.resume(tenant.tenant_id)
    context_of(plain)
    with recording() as forbidden:  # the route's 403 and its audit event: one write
        assert request(plain, "GET", "/v1/keys").status == 403
    # The authorizer's GetItem (request() runs it), nothing else on the tenants table.
    assert [c.operation for c in forbidden.of("dynamodb", table="tenants")] == ["GetItem"]
    assert [c.operation for c in forbidden.of("dynamodb", table="audit")] == ["BatchWriteItem"]

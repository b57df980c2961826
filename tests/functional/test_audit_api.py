"""``GET /v1/audit`` against moto: only the caller's tenant, oldest first, pages, filters,
a cursor bound to its tenant, the ``audit:read`` scope, and clear 4xx for bad input."""

from __future__ import annotations

from typing import Any

import pytest

from functions.handlers import api
from stratus import composition
from tests.support import api_event, call


def audit(tenant: str = "tenant-a", scopes: str | None = None, **query: Any) -> Any:
    event = api_event(None, path="/v1/audit", method="GET", tenant_id=tenant)
    if scopes is not None:
        event["requestContext"]["authorizer"]["scopes"] = scopes
    multi = {k: v if isinstance(v, list) else [str(v)] for k, v in query.items()}
    event["multiValueQueryStringParameters"] = multi or None
    event["queryStringParameters"] = {k: v[-1] for k, v in multi.items()} or None
    return call(api.lambda_handler, event)


@pytest.fixture
def trail(cloud: dict[str, Any]) -> list[str]:
    """Five events of tenant-a and three of tenant-b, interleaved; tenant-a's types."""
    serve = composition.current().audit
    types = ["key.created", "tool.executed", "tool.denied", "job.approved", "tool.executed"]
    for n, kind in enumerate(types):
        serve.record_now("tenant-a", kind, actor=f"key_a{n}", details={"n": n})
        if n < 3:
            serve.record_now("tenant-b", "tool.denied", actor="key_b", details={"secret": n})
    return types


def test_a_tenant_sees_only_its_own_events_oldest_first_page_by_page(trail: list[str]) -> None:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        reply = audit(limit=2, **({"cursor": cursor} if cursor else {}))
        assert reply.status == 200, reply.body
        seen.extend(reply.body["events"])
        pages += 1
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [e["type"] for e in seen] == trail
    assert [e["details"]["n"] for e in seen] == [0, 1, 2, 3, 4]
    assert {e["tenant_id"] for e in seen} == {"tenant-a"}
    assert seen[0]["at"].endswith("+00:00") and seen[0]["actor"] == "key_a0"
    other = audit("tenant-b").body["events"]
    assert [e["actor"] for e in other] == ["key_b"] * 3


def test_type_filters_repeated_or_comma_separated(trail: list[str]) -> None:
    repeated = audit(type=["tool.denied", "job.approved"]).body["events"]
    listed = audit(type="tool.denied,job.approved").body["events"]
    assert [e["type"] for e in repeated] == ["tool.denied", "job.approved"]
    assert listed == repeated
    page = audit(type="tool.executed", limit=1)
    assert [e["details"]["n"] for e in page.body["events"]] == [1]
    rest = audit(type="tool.executed", cursor=page.body["next_cursor"]).body
    assert [e["details"]["n"] for e in rest["events"]] == [4] and rest["next_cursor"] is None


def test_since_starts_the_listing_and_defaults_to_a_day_back(trail: list[str]) -> None:
    assert audit(since="2999-01-01T00:00:00Z").body["events"] == []
    assert len(audit(since="2000-01-01T00:00:00").body["events"]) == 5
    assert audit().body["since"] < audit(since="2999-01-01T00:00:00Z").body["since"]


def test_another_tenants_or_a_made_up_cursor_is_refused_never_followed(trail: list[str]) -> None:
    b_cursor = audit("tenant-b", limit=1).body["next_cursor"]
    assert b_cursor
    crossed = audit("tenant-a", cursor=b_cursor)
    assert crossed.status == 404 and crossed.body["error"]["code"] == "invalid_cursor"
    made_up = audit(cursor="not-a-cursor")
    assert made_up.status == 404 and made_up.body["error"]["code"] == "invalid_cursor"
    assert made_up.body["error"]["request_id"]


def test_a_key_without_audit_read_is_forbidden(trail: list[str]) -> None:
    reply = audit(scopes="invoke jobs")
    assert reply.status == 403
    assert reply.body["error"]["code"] == "forbidden"
    assert reply.body["error"]["details"] == {"missing_scope": "audit:read"}


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 201}, {"since": "yesterday"}, {"type": "tool.exploded"}],
)
def test_bad_input_is_a_clear_4xx(cloud: dict[str, Any], query: dict[str, Any]) -> None:
    reply = audit(**query)
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "validation_error"


def test_an_operator_change_is_written_at_once_with_the_operator_as_actor(
    cloud: dict[str, Any],
) -> None:
    from infra.audit_cli import record_operator_event
    from stratus.aws import AwsClients

    details = {"daily_usd": "5", "monthly_usd": None}
    record_operator_event(AwsClients(), "tenant-a", "budget.limits_changed", details)
    (event,) = audit(type="budget.limits_changed").body["events"]
    assert event["actor"] == "operator" and event["details"] == details

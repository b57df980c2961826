"""``GET/POST /v1/reviews`` through the real handlers (authorizer + platform) on moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bench.roundtrips import recording
from functions.handlers import api, authorizer
from stratus import composition
from stratus.tenants import TenantStore
from tests.functional.test_authorizer_and_tenants import authorizer_event
from tests.support import FakeLambdaContext, api_event, call

Caller = Callable[..., Any]


@pytest.fixture
def platform(cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The platform function with every answer sampled; two tenants and their keys."""
    monkeypatch.setenv("STRATUS_AGENT", "")
    monkeypatch.setenv("STRATUS_REVIEW_SAMPLE_RATE", "1.0")
    composition.reset()
    store = TenantStore(cloud["tables"]["tenants"])
    admin, admin_key = store.create("acme")
    _, plain_key = store.create("acme-app", scopes=["invoke", "jobs"])
    other, other_key = store.create("globex")
    return {
        "admin": admin.tenant_id,
        "other": other.tenant_id,
        "keys": {"admin": admin_key, "plain": plain_key, "other": other_key},
        **cloud,
    }


def context_of(key: str) -> dict[str, Any]:
    """What the real authorizer puts in the request context for ``key``."""
    context: Any = FakeLambdaContext()
    policy = authorizer.lambda_handler(authorizer_event(f"Bearer {key}"), context)
    return {"principalId": policy["principalId"], **policy["context"]}


def request(key: str, method: str, path: str, body: Any = None, query: Any = None) -> Any:
    event = api_event(None, path=path, method=method, body=body)
    event["requestContext"]["authorizer"] = context_of(key)
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in (query or {}).items()} or None
    return call(api.lambda_handler, event)


def offer(tenant: str, n: int, agent: str = "triage", release: str = "1.0.0") -> str:
    review_id = composition.current().reviews.offer(
        tenant, agent, release, "job", f"job-{n}", f"question {n}", {"n": n}, "gpt-5-mini"
    )
    assert review_id is not None
    return review_id


def test_the_authorizer_passes_the_keys_scopes(platform: dict[str, Any]) -> None:
    admin = context_of(platform["keys"]["admin"])
    assert admin["scopes"].split() == [
        "invoke",
        "sessions",
        "jobs",
        "jobs:approve",
        "usage:read",
        "audit:read",
        "admin",
    ]
    assert context_of(platform["keys"]["plain"])["scopes"] == "invoke jobs"


def test_without_admin_every_review_route_is_forbidden(platform: dict[str, Any]) -> None:
    review_id = offer(platform["admin"], 1)
    key = platform["keys"]["plain"]
    for method, path, body in (
        ("GET", "/v1/reviews", None),
        ("GET", f"/v1/reviews/{review_id}", None),
        ("POST", f"/v1/reviews/{review_id}", {"score": 1}),
    ):
        reply = request(key, method, path, body)
        assert reply.status == 403, (method, path, reply.body)
        assert reply.body["error"]["code"] == "forbidden"
        assert reply.body["error"]["details"] == {"missing_scope": "admin"}
        assert reply.body["error"]["request_id"]
    # Nothing was graded.
    assert composition.current().reviews.get(platform["admin"], review_id)["status"] == "pending"


def test_a_review_is_listed_graded_once_and_moves_the_human_score(
    platform: dict[str, Any],
) -> None:
    key, tenant = platform["keys"]["admin"], platform["admin"]
    first, second = offer(tenant, 1), offer(tenant, 2)
    listed = request(key, "GET", "/v1/reviews")
    assert listed.status == 200, listed.body
    assert [r["review_id"] for r in listed.body["reviews"]] == [second, first]
    assert listed.body["next_cursor"] is None and listed.body["human_score"] == []
    one = listed.body["reviews"][1]
    assert (one["status"], one["input"], json.loads(one["output"])) == (
        "pending",
        "question 1",
        {"n": 1},
    )

    graded = request(key, "POST", f"/v1/reviews/{first}", {"score": 0.9, "comment": "spot on"})
    assert graded.status == 200, graded.body
    assert (graded.body["status"], graded.body["score"], graded.body["comment"]) == (
        "reviewed",
        0.9,
        "spot on",
    )
    assert graded.body["human_score"] == {
        "agent": "triage",
        "release": "1.0.0",
        "score": 0.9,
        "reviewed": 1,
    }
    again = request(key, "POST", f"/v1/reviews/{first}", {"score": 0.1})
    assert again.status == 409 and again.body["error"]["code"] == "already_reviewed"
    later = request(key, "POST", f"/v1/reviews/{second}", {"score": 0.4})
    assert later.body["human_score"]["score"] == 0.65 and later.body["human_score"]["reviewed"] == 2

    assert request(key, "GET", "/v1/reviews").body["reviews"] == []  # pending by default
    everything = request(key, "GET", "/v1/reviews", query={"status": "all", "agent": "triage"})
    assert [r["status"] for r in everything.body["reviews"]] == ["reviewed", "reviewed"]
    assert everything.body["human_score"] == [
        {"agent": "triage", "release": "1.0.0", "score": 0.65, "reviewed": 2}
    ]
    shown = request(key, "GET", f"/v1/reviews/{first}")
    assert shown.status == 200 and shown.body["score"] == 0.9


def test_another_tenants_review_is_not_found(platform: dict[str, Any]) -> None:
    theirs = offer(platform["other"], 1)
    key = platform["keys"]["admin"]
    for method, body in (("GET", None), ("POST", {"score": 1})):
        reply = request(key, method, f"/v1/reviews/{theirs}", body)
        assert reply.status == 404 and reply.body["error"]["code"] == "not_found"
    assert request(key, "GET", "/v1/reviews/rv_unknown").status == 404
    assert request(key, "GET", "/v1/reviews").body["reviews"] == []
    # Their own admin sees it, still pending.
    mine = request(platform["keys"]["other"], "GET", "/v1/reviews")
    assert [r["review_id"] for r in mine.body["reviews"]] == [theirs]


def test_the_cursor_pages_and_is_refused_across_tenants(platform: dict[str, Any]) -> None:
    key = platform["keys"]["admin"]
    ids = [offer(platform["admin"], n) for n in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = request(key, "GET", "/v1/reviews", query=query)
        assert page.status == 200, page.body
        seen += [r["review_id"] for r in page.body["reviews"]]
        cursor = page.body["next_cursor"]
    assert seen == list(reversed(ids)) and cursor is None
    first = request(key, "GET", "/v1/reviews", query={"limit": "2"}).body["next_cursor"]
    other = request(platform["keys"]["other"], "GET", "/v1/reviews", query={"cursor": first})
    assert other.status == 404 and other.body["error"]["code"] == "invalid_cursor"
    assert other.body["error"]["request_id"]
    made_up = request(key, "GET", "/v1/reviews", query={"cursor": "0"})
    assert made_up.status == 404 and made_up.body["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    "body",
    [
        {"score": 1.5},
        {"score": -0.1},
        {"comment": "no score"},
        {"score": "high"},
        {"score": False},  # found by the fuzzer: JSON booleans were taken for 0 and 1
        {"score": "0.5"},
        {"score": 0.5, "comment": "x" * 2001},
        {"score": 0.5, "extra": True},
    ],
)
def test_a_bad_grade_is_a_validation_error(platform: dict[str, Any], body: Any) -> None:
    review_id = offer(platform["admin"], 1)
    reply = request(platform["keys"]["admin"], "POST", f"/v1/reviews/{review_id}", body)
    assert reply.status == 422 and reply.body["error"]["code"] == "validation_error"


def test_an_agent_the_stack_lacks_is_agent_not_found(platform: dict[str, Any]) -> None:
    reply = request(platform["keys"]["admin"], "GET", "/v1/reviews", query={"agent": "nope"})
    assert reply.status == 404 and reply.body["error"]["code"] == "agent_not_found"


@pytest.mark.parametrize(
    "query", [{"status": "done"}, {"limit": "0"}, {"limit": "101"}, {"limit": "many"}]
)
def test_bad_listing_parameters_are_validation_errors(
    platform: dict[str, Any], query: dict[str, str]
) -> None:
    reply = request(platform["keys"]["admin"], "GET", "/v1/reviews", query=query)
    assert reply.status == 422 and reply.body["error"]["code"] == "validation_error"


def test_round_trips_of_an_offer_a_listing_and_a_grade(platform: dict[str, Any]) -> None:
    key, tenant = platform["keys"]["admin"], platform["admin"]
    context_of(key)  # the authorizer is not part of what is counted
    with recording() as offered:
        review_id = offer(tenant, 1)
    assert [c.operation for c in offered.of("dynamodb")] == ["PutItem"]
    with recording(latency_s=0.05) as listed:
        assert request(key, "GET", "/v1/reviews").status == 200
    # The page and the scores together (the authorizer's key lookup is not the route's).
    assert listed.requests("dynamodb", table="reviews") == 2, listed.describe("dynamodb")
    assert listed.round_trips("dynamodb", table="reviews") == 1, listed.describe("dynamodb")
    with recording() as graded:
        assert request(key, "POST", f"/v1/reviews/{review_id}", {"score": 1}).status == 200
    assert [c.operation for c in graded.of("dynamodb", table="reviews")] == [
        "GetItem",
        "TransactWriteItems",
        "GetItem",
    ]
    desk = composition.current().reviews
    desk.rng = lambda: 1.0  # above any share below 1: not sampled
    desk.settings = desk.settings.model_copy(update={"review_sample_rate": 0.5})
    with recording() as skipped:
        assert desk.offer(tenant, "triage", "1.0.0", "job", "j", "q", "a", "m") is None
    assert skipped.requests("dynamodb") == 0


def test_a_tiny_grade_is_stored_to_four_decimals_not_a_500(platform: dict[str, Any]) -> None:
    # Found by the fuzzer: 2.45e-245 is below DynamoDB's smallest number.
    review_id = offer(platform["admin"], 1)
    reply = request(
        platform["keys"]["admin"], "POST", f"/v1/reviews/{review_id}", {"score": 2.45e-245}
    )
    assert reply.status == 200, reply.body
    assert reply.body["score"] == 0.0
    graded = request(platform["keys"]["admin"], "POST", f"/v1/reviews/{review_id}", {"score": 1})
    assert graded.status == 409 and graded.body["error"]["code"] == "already_reviewed"

"""Long-term memory in process: the embedding gateway against the fake model over real
HTTP (budgets, ledger replay, retries), the ``/v1/memory`` routes and a ``support``
session turn through the real handlers, on moto's S3 Vectors with the local
``QueryVectors`` (:mod:`infra.local.moto_vectors`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.handlers import api
from infra.local import moto_atomic, moto_vectors
from infra.local.fake_model import FakeModelServer, Fault, Reply
from stratus import composition
from stratus.agents import CallScope
from stratus.audit import list_events
from stratus.errors import BudgetExceeded
from stratus.gateway_embeddings import EmbeddingGateway
from stratus.memory.agent import RECALL_HEADER
from stratus.memory.store import Owner
from stratus.usage import Usage
from tests.functional.gateway_support import make_rig, today
from tests.support import api_event, call

EMBEDDINGS = "/v1/embeddings"
MODEL = "text-embedding-3-small"
BUCKET, INDEX, DIM = "stratus-test-memory", "memories", 256


@pytest.fixture(autouse=True)
def _local_front() -> Iterator[None]:
    moto_atomic.install()
    moto_vectors.install()
    yield
    moto_vectors.uninstall()
    moto_atomic.uninstall()


@pytest.fixture
def memory_cloud(cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The cloud fixture plus the stage's vector bucket and index and the memory env."""
    client = boto3.client("s3vectors")
    client.create_vector_bucket(vectorBucketName=BUCKET)
    client.create_index(
        vectorBucketName=BUCKET,
        indexName=INDEX,
        dataType="float32",
        dimension=DIM,
        distanceMetric="cosine",
        metadataConfiguration={"nonFilterableMetadataKeys": ["text"]},
    )
    for key, value in {
        "STRATUS_MEMORY_BUCKET": BUCKET,
        "STRATUS_MEMORY_INDEX": INDEX,
        "STRATUS_MEMORY_DIMENSION": str(DIM),
        "STRATUS_MEMORY_DISTANCE": "cosine",
        "STRATUS_EMBEDDING_MODEL": MODEL,
        "STRATUS_MEMORY_TTL_S": str(90 * 86_400),
    }.items():
        monkeypatch.setenv(key, value)
    composition.reset()
    return cloud


def _embedder(cloud: dict[str, Any], **overrides: Any) -> tuple[EmbeddingGateway, Any]:
    rig = make_rig(cloud, memory_dimension=DIM, **overrides)
    runtime = rig.runtime
    gateway = EmbeddingGateway(
        rig.gateway,
        rig.settings,
        runtime.prices,
        records=runtime.embeddings._records,
        clock=rig.clock,
        sleep=rig.sleeps.append,
        jitter=lambda: 0.0,
    )
    return gateway, rig


def _scope(scope_id: str = "s_1", step: str = "turn-1") -> CallScope:
    return CallScope("tenant-a", "support", "session", scope_id, step=step)


# -- the embedding gateway


def test_an_embedding_is_billed_settled_and_replayed_once(
    memory_cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    embeddings, rig = _embedder(memory_cloud)
    texts = ["Prefers email over phone calls.", "Lives in Lyon."]
    first = embeddings.embed(texts, scope=_scope(), step="turn-1:facts", agent="support")
    assert len(first.vectors) == 2 and all(len(v) == DIM for v in first.vectors)
    assert first.fake_model and not first.replayed
    assert first.usage.input_tokens > 0
    price = rig.runtime.prices.cost(MODEL, Usage(input_tokens=first.usage.input_tokens))
    assert first.cost_usd == price > 0
    assert rig.spent(f"TENANT#tenant-a#DAY#{today()}") == price
    assert rig.committed(f"TENANT#tenant-a#DAY#{today()}") == price  # reservation settled
    # A retry of the same step (SQS redelivery, a retried turn) replays: no second call.
    again = embeddings.embed(texts, scope=_scope(), step="turn-1:facts", agent="support")
    assert again.replayed and again.cost_usd == price
    for replayed, original in zip(again.vectors, first.vectors, strict=True):
        assert replayed == pytest.approx(original, abs=1e-6)  # float32 in the ledger
    assert fake_model.call_count(path=EMBEDDINGS) == 1
    assert rig.spent(f"TENANT#tenant-a#DAY#{today()}") == price
    # Another step is another call.
    embeddings.embed(texts, scope=_scope(), step="turn-2:facts", agent="support")
    assert fake_model.call_count(path=EMBEDDINGS) == 2
    [request] = [r for r in fake_model.requests if r.path == EMBEDDINGS][:1]
    assert request.body["dimensions"] == DIM and request.body["model"] == MODEL


def test_a_budget_refusal_calls_nothing(
    memory_cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    embeddings, rig = _embedder(memory_cloud)
    rig.gateway.budgets.set_tenant_limits("tenant-a", daily_usd=Decimal("0"), monthly_usd=None)
    with pytest.raises(BudgetExceeded):
        embeddings.embed(["hello"], scope=_scope(), step="x", agent="support")
    assert fake_model.call_count(path=EMBEDDINGS) == 0


def test_a_failing_provider_is_retried_with_backoff(
    memory_cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    embeddings, rig = _embedder(memory_cloud)
    fake_model.inject(Fault(status=503, model=MODEL, retry_after=0.25))
    result = embeddings.embed(["hello there"], scope=_scope(), step="x", agent="support")
    assert result.attempts == 2
    assert rig.sleeps == [0.25]
    assert fake_model.call_count(path=EMBEDDINGS) == 2


# -- the /v1/memory routes (platform function)


def request(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    tenant: str = "tenant-a",
    customer: str = "",
    scopes: str = "sessions",
    body: Any = None,
) -> Any:
    event = api_event(None, path=path, method=method, body=body, tenant_id=tenant)
    event["requestContext"]["authorizer"].update(
        {"customer_id": customer, "scopes": scopes, "key_id": f"key_{tenant}_{customer or 'root'}"}
    )
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    return call(api.lambda_handler, event)


def _seed(tenant: str, customer: str, *texts: str) -> list[str]:
    service = composition.current().memory
    ids, _ = service.remember(
        Owner.of(tenant, customer), texts, kind="remembered", agent="support", scope=None, step="s"
    )
    return ids


def test_search_forget_and_delete_through_the_api(
    memory_cloud: dict[str, Any], serve_agent: Any
) -> None:
    serve_agent("")  # the platform function
    [tea] = _seed("tenant-a", "alice", "Alice prefers green tea in the morning.")
    _seed("tenant-a", "alice", "Alice lives in Lyon.")
    _seed("tenant-a", "bob", "Bob prefers green tea too.")
    _seed("tenant-b", "alice", "Another tenant's alice prefers green tea.")

    found = request("GET", "/v1/memory", query={"q": "green tea", "user": "alice"})
    assert found.status == 200, found.body
    texts = [m["text"] for m in found.body["memories"]]
    assert texts[0] == "Alice prefers green tea in the morning."
    assert set(texts) <= {"Alice prefers green tea in the morning.", "Alice lives in Lyon."}
    assert found.body["memories"][0]["id"] == tea and found.body["user"] == "alice"
    assert found.body["cost_usd"] > 0 and found.body["usage"]["input_tokens"] > 0
    one = request("GET", "/v1/memory", query={"q": "green tea", "user": "alice", "limit": "1"})
    assert len(one.body["memories"]) == 1

    # A key bound to bob may only name bob.
    bob = request("GET", "/v1/memory", query={"q": "tea", "user": "alice"}, customer="bob")
    assert bob.status == 403 and bob.body["error"]["code"] == "forbidden"
    own = request("GET", "/v1/memory", query={"q": "green tea"}, customer="bob")
    assert [m["text"] for m in own.body["memories"]] == ["Bob prefers green tea too."]

    for query in (
        {"q": "tea", "limit": "0"},
        {"q": "tea", "limit": "101"},
        {"q": "  "},
        {"q": "tea", "user": "bad user!"},
    ):
        bad = request("GET", "/v1/memory", query=query)
        assert bad.status == 422 and bad.body["error"]["code"] == "validation_error", query
    denied = request("GET", "/v1/memory", query={"q": "tea"}, scopes="invoke")
    assert denied.status == 403 and denied.body["error"]["details"]["missing_scope"] == "sessions"
    assert request("GET", "/v1/memory", query={"q": "tea"}, scopes="admin").status == 200

    # One memory: another tenant's id or an unknown one is 404.
    other = request("DELETE", f"/v1/memory/{tea}", tenant="tenant-b")
    assert other.status == 404 and other.body["error"]["code"] == "memory_not_found"
    assert request("DELETE", "/v1/memory/" + "0" * 32).status == 404
    assert request("DELETE", "/v1/memory/not-an-id").status == 404
    assert request("DELETE", f"/v1/memory/{tea}", customer="bob").status == 404
    assert request("DELETE", f"/v1/memory/{tea}").status == 204
    assert request("DELETE", f"/v1/memory/{tea}").status == 404

    # Forget alice: every vector of tenant-a's alice, nothing else.
    assert request("DELETE", "/v1/memory").status == 422  # whom?
    forgot = request("DELETE", "/v1/memory", query={"user": "alice"})
    assert forgot.status == 200 and forgot.body == {"deleted": 1, "user": "alice"}
    after = request("GET", "/v1/memory", query={"q": "green tea", "user": "alice"})
    assert after.body["memories"] == []
    listed = boto3.client("s3vectors").list_vectors(
        vectorBucketName=BUCKET, indexName=INDEX, returnMetadata=True
    )["vectors"]
    assert sorted((v["metadata"]["tenant_id"], v["metadata"]["customer_id"]) for v in listed) == [
        ("tenant-a", "bob"),
        ("tenant-b", "alice"),
    ]
    page = list_events(
        composition.current().audit, "tenant-a", types=("memory.deleted", "memory.forgotten")
    )
    events = [(e["type"], e["details"]) for e in page["events"]]
    assert events == [
        ("memory.deleted", {"memory_id": tea, "user": "alice", "kind": "remembered"}),
        ("memory.forgotten", {"user": "alice", "deleted": 1}),
    ]


# -- a support session: remember in one, recall in the next


def _session(customer: str, tenant: str = "tenant-a") -> str:
    reply = request(
        "POST",
        "/v1/agents/support/sessions",
        body={"metadata": {}},
        tenant=tenant,
        customer=customer,
    )
    assert reply.status == 201, reply.body
    return str(reply.body["session_id"])


def _say(sid: str, text: str, customer: str, tenant: str = "tenant-a") -> Any:
    reply = request(
        "POST",
        f"/v1/agents/support/sessions/{sid}/messages",
        body={"message": text},
        tenant=tenant,
        customer=customer,
    )
    assert reply.status == 200, reply.body
    return reply.body


def _prompts(fake_model: FakeModelServer) -> list[list[dict[str, Any]]]:
    return [
        r.body["messages"]
        for r in fake_model.requests
        if r.path == "/v1/chat/completions" and "response_format" not in r.body
    ]


def test_a_preference_told_in_one_session_is_recalled_in_the_next(
    memory_cloud: dict[str, Any], serve_agent: Any, fake_model: FakeModelServer
) -> None:
    serve_agent("support")
    fact = "Prefers to be contacted by email only."
    facts = json.dumps({"facts": []})
    fake_model.script(
        Reply(tool_calls=[{"name": "remember", "arguments": {"text": fact}}]),
        Reply(content="Noted: email only."),
        Reply(content=facts, schema_name="Facts"),
    )
    first = _say(_session("alice"), "Please only ever contact me by email.", "alice")
    assert [c["name"] for c in first["tool_calls"]] == ["remember"]
    assert first["cost_usd"] > 0
    fake_model.reset()
    fake_model.script(Reply(content="I will email you."), Reply(content=facts, schema_name="Facts"))
    _say(_session("alice"), "Will you contact me by email or by phone about my order?", "alice")
    recalled = [m["content"] for m in _prompts(fake_model)[0] if m["role"] == "system"]
    assert any(c.startswith(RECALL_HEADER) and fact in c for c in recalled)
    # Never for another end customer or tenant, whatever they ask.
    for tenant, customer in (("tenant-a", "bob"), ("tenant-b", "alice")):
        fake_model.reset()
        fake_model.script(Reply(content="ok"), Reply(content=facts))
        _say(
            _session(customer, tenant),
            "Will you contact me by email or by phone about my order?",
            customer,
            tenant,
        )
        prompt = _prompts(fake_model)[0]
        assert not any(fact in str(m.get("content")) for m in prompt)


def test_an_embedding_call_is_two_dynamodb_round_trips(
    memory_cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    from bench.roundtrips import recording
    from tests.functional.gateway_support import run_now

    rig = make_rig(memory_cloud, memory_dimension=DIM, spawn=run_now)
    embeddings = EmbeddingGateway(
        rig.gateway, rig.settings, rig.runtime.prices, records=rig.runtime.embeddings._records
    )
    embeddings.embed(["warm up"], scope=_scope("s_0"), step="x", agent="support")
    with recording(latency_s=0.05) as trace:
        result = embeddings.embed(["hello"], scope=_scope("s_1"), step="x", agent="support")
    assert not result.replayed and result.cost_usd > 0
    # Reserve (with the ledger lookup and the key take) together; then settle together.
    assert trace.round_trips("dynamodb") == 2, trace.describe("dynamodb")
    day = f"TENANT#tenant-a#DAY#{today()}"
    assert rig.committed(day) == rig.spent(day) > 0

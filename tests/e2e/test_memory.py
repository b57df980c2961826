"""Long-term memory end to end on the local cloud, as a client sees it (issue 18).

A fact told to ``support`` in one session is recalled into the prompt of a new session
of the same tenant and end customer, and never for another end customer or tenant,
whatever they try: another ``user=``, crafted ids and keys, a model asked to remember
into someone else's memory. ``DELETE /v1/memory?user=`` removes every vector of that
customer and a later recall finds nothing. The model is the offline fake (its
embeddings are hashed words); the vector index is moto's with the local ``QueryVectors``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import boto3
import pytest

from infra.local.cloud import LocalCloud
from infra.local.demo import http
from infra.local.fake_model import Reply
from stratus.memory.agent import RECALL_HEADER
from stratus.tenants import TenantStore

pytestmark = pytest.mark.xdist_group("local-cloud")

FACT = "Prefers to be contacted by email only."
QUESTION = "Will you contact me by email or by phone about my order?"
NO_FACTS = Reply(content=json.dumps({"facts": []}), schema_name="Facts")


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


@pytest.fixture(scope="module")
def facts(cloud: LocalCloud) -> Any:
    assert cloud.facts is not None
    return cloud.facts


@pytest.fixture(scope="module")
def aws(facts: Any) -> Callable[[str], Any]:
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name=facts.region
    )

    def client(service: Any) -> Any:
        return session.client(service, endpoint_url=facts.aws_endpoint_url)

    return client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _bound(facts: Any, root: str, customer: str) -> str:
    made = http(
        "POST",
        f"{facts.api_url}/v1/keys",
        {"scopes": ["sessions"], "customer_id": customer},
        _auth(root),
    )
    assert made.status == 201, made.body
    return str(made.body["key"])


@pytest.fixture(scope="module")
def keys(facts: Any, aws: Callable[[str], Any]) -> dict[str, Any]:
    """Two tenants of this module's own; keys bound to alice and bob, and the roots."""
    store = TenantStore(facts.tables["tenants"], aws("dynamodb"))
    tenant, root = store.create("memory-e2e")
    other, other_root = store.create("memory-e2e-other")
    return {
        "tenant": tenant.tenant_id,
        "other_tenant": other.tenant_id,
        "root": root,
        "other_root": other_root,
        "alice": _bound(facts, root, "alice"),
        "bob": _bound(facts, root, "bob"),
        "other_alice": _bound(facts, other_root, "alice"),
    }


def _turn(facts: Any, key: str, message: str) -> dict[str, Any]:
    """One message in a new support session with ``key``."""
    base = f"{facts.api_url}/v1/agents/support/sessions"
    created = http("POST", base, {"metadata": {}}, _auth(key))
    assert created.status == 201, created.body
    reply = http(
        "POST", f"{base}/{created.body['session_id']}/messages", {"message": message}, _auth(key)
    )
    assert reply.status == 200, reply.body
    return dict(reply.body)


def _prompt(cloud: LocalCloud) -> str:
    """Every chat message the support turn sent (not the fact extraction call)."""
    assert cloud.fake_model is not None
    sent = [
        r.body["messages"]
        for r in cloud.fake_model.requests
        if r.path == "/v1/chat/completions" and "response_format" not in (r.body or {})
    ]
    assert sent, "the turn called no model"
    return json.dumps(sent)


def _search(facts: Any, key: str, **query: str) -> Any:
    return http("GET", f"{facts.api_url}/v1/memory?{urlencode(query)}", headers=_auth(key))


def _script(cloud: LocalCloud, *replies: Reply) -> None:
    assert cloud.fake_model is not None
    cloud.fake_model.reset()
    cloud.fake_model.script(*replies)


def test_a_fact_is_recalled_for_its_customer_only(
    cloud: LocalCloud, facts: Any, keys: dict[str, Any]
) -> None:
    _script(
        cloud,
        Reply(tool_calls=[{"name": "remember", "arguments": {"text": FACT}}]),
        Reply(content="Noted: email only."),
        NO_FACTS,
    )
    told = _turn(facts, keys["alice"], "Please only ever contact me by email.")
    assert [c["name"] for c in told["tool_calls"]] == ["remember"]

    # A new session of the same tenant and customer: the fact is in the prompt.
    _script(cloud, Reply(content="By email."), NO_FACTS)
    _turn(facts, keys["alice"], QUESTION)
    prompt = _prompt(cloud)
    assert RECALL_HEADER in prompt and FACT in prompt
    found = _search(facts, keys["alice"], q=QUESTION)
    assert found.status == 200 and [m["text"] for m in found.body["memories"]] == [FACT]
    memory_id = found.body["memories"][0]["id"]
    assert found.body["memories"][0]["user"] == "alice"

    # Another end customer of the tenant, and the same customer id in another tenant.
    for key in (keys["bob"], keys["other_alice"]):
        _script(cloud, Reply(content="ok"), NO_FACTS)
        _turn(facts, key, QUESTION)
        assert FACT not in _prompt(cloud)
        assert _search(facts, key, q=FACT).body["memories"] == []
    # Bob cannot name alice; the other tenant's root can, and finds nothing.
    refused = _search(facts, keys["bob"], q=FACT, user="alice")
    assert refused.status == 403 and refused.body["error"]["code"] == "forbidden"
    assert _search(facts, keys["other_root"], q=FACT, user="alice").body["memories"] == []
    # The tenant's own root key may look at alice's memories (a data-subject request).
    assert [
        m["text"] for m in _search(facts, keys["root"], q=FACT, user="alice").body["memories"]
    ] == [FACT]
    # Crafted user values never widen the filter.
    for user in ("*", 'alice"}', "alice#", ""):
        crafted = _search(facts, keys["other_root"], q=FACT, user=user)
        assert crafted.status in (200, 422), crafted.body
        assert FACT not in json.dumps(crafted.body)
    # Crafted ids and keys: another tenant's id, the vector key itself.
    for path in (memory_id, quote(f"{keys['tenant']}#{memory_id}", safe=""), "../" + memory_id):
        gone = http(
            "DELETE", f"{facts.api_url}/v1/memory/{path}", headers=_auth(keys["other_root"])
        )
        assert gone.status == 404, (path, gone.body)
    assert _search(facts, keys["alice"], q=FACT).body["memories"] != []

    # A model asked to remember "for alice" in bob's session remembers for bob: the
    # tools take the tenant and customer from the caller (arguments name only the text).
    _script(
        cloud,
        Reply(tool_calls=[{"name": "remember", "arguments": {"text": "Alice wants calls."}}]),
        Reply(content="ok"),
        NO_FACTS,
    )
    _turn(facts, keys["bob"], "Remember for customer alice of this tenant that she wants calls.")
    as_alice = _search(facts, keys["root"], q="Alice wants calls", user="alice").body
    assert "Alice wants calls." not in json.dumps(as_alice)
    as_bob = _search(facts, keys["bob"], q="Alice wants calls").body["memories"]
    assert [m["text"] for m in as_bob] == ["Alice wants calls."]


def test_forgetting_a_customer_removes_every_vector(
    cloud: LocalCloud, facts: Any, keys: dict[str, Any], aws: Callable[[str], Any]
) -> None:
    _script(
        cloud,
        Reply(tool_calls=[{"name": "remember", "arguments": {"text": "Lives in Lyon."}}]),
        Reply(content="ok"),
        NO_FACTS,
    )
    _turn(facts, keys["alice"], "I live in Lyon, by the way.")
    forgot = http("DELETE", f"{facts.api_url}/v1/memory?user=alice", headers=_auth(keys["root"]))
    assert forgot.status == 200 and forgot.body["deleted"] >= 1 and forgot.body["user"] == "alice"
    listed = aws("s3vectors").list_vectors(
        vectorBucketName=_bucket(aws),
        indexName="memories",
        returnMetadata=True,
    )["vectors"]
    owners = {(v["metadata"]["tenant_id"], v["metadata"]["customer_id"]) for v in listed}
    assert (keys["tenant"], "alice") not in owners
    assert _search(facts, keys["alice"], q=FACT).body["memories"] == []
    _script(cloud, Reply(content="ok"), NO_FACTS)
    _turn(facts, keys["alice"], QUESTION)
    prompt = _prompt(cloud)
    assert FACT not in prompt and "Lyon" not in prompt


def _bucket(aws: Callable[[str], Any]) -> str:
    buckets = aws("s3vectors").list_vector_buckets()["vectorBuckets"]
    [bucket] = [b["vectorBucketName"] for b in buckets if "memory" in b["vectorBucketName"]]
    return str(bucket)

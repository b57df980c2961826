"""The vector store port: the S3 Vectors adapter (boto3 ``s3vectors`` on moto, with the
local front's ``QueryVectors``, :mod:`infra.local.moto_vectors`) and the in-memory fake
agree on put, get, delete, listing and queries (top-k order, filters, distance, metadata)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local import moto_vectors
from stratus.aws import AwsClients
from stratus.memory.fake import MemoryVectorStore
from stratus.memory.s3vectors import S3VectorStore
from stratus.memory.store import Distance, Owner, Vector, VectorStore

DIM = 4
BUCKET, INDEX = "stratus-test-memory", "memories"


@pytest.fixture(scope="module", autouse=True)
def _query_vectors() -> Iterator[None]:
    moto_vectors.install()
    yield
    moto_vectors.uninstall()


def _make(kind: str, distance: Distance) -> Iterator[VectorStore]:
    if kind == "memory":
        yield MemoryVectorStore(dimension=DIM, distance=distance)
        return
    with mock_aws():
        client = boto3.client("s3vectors")
        client.create_vector_bucket(vectorBucketName=BUCKET)
        client.create_index(
            vectorBucketName=BUCKET,
            indexName=INDEX,
            dataType="float32",
            dimension=DIM,
            distanceMetric=distance,
            metadataConfiguration={"nonFilterableMetadataKeys": ["text"]},
        )
        yield S3VectorStore(AwsClients(), BUCKET, INDEX, distance=distance)


@pytest.fixture(params=["memory", "s3vectors"])
def store(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[VectorStore]:
    yield from _make(request.param, "cosine")


@pytest.fixture(params=["memory", "s3vectors"])
def euclidean(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[VectorStore]:
    yield from _make(request.param, "euclidean")


def meta(tenant: str = "t1", customer: str = "c1", **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "customer_id": customer,
        "agent": "support",
        "kind": "fact",
        "session_id": "-",
        "created_at": 1_000,
        "expires_at": 2_000,
        "text": "some text",
        **extra,
    }


def test_put_get_replace_delete(store: VectorStore) -> None:
    store.put(
        [Vector("t1#a", [1.0, 0.0, 0.0, 0.0], meta()), Vector("t1#b", [0.0, 1.0, 0.0, 0.0], meta())]
    )
    got = store.get(["t1#a", "t1#missing"])
    assert [(v.key, v.metadata) for v in got] == [("t1#a", meta())]
    store.put([Vector("t1#a", [1.0, 0.0, 0.0, 0.0], meta(text="replaced"))])
    assert store.get(["t1#a"])[0].metadata["text"] == "replaced"
    store.delete(["t1#a", "t1#never"])
    assert store.get(["t1#a"]) == []
    assert sorted(v.key for v in store.scan()) == ["t1#b"]


def test_scan_lists_every_vector_with_metadata(store: VectorStore) -> None:
    vectors = [
        Vector(f"t{i % 2}#{i:032x}", [1.0, float(i), 0.0, 0.0], meta(tenant=f"t{i % 2}"))
        for i in range(30)
    ]
    store.put(vectors)
    listed = {v.key: v.metadata for v in store.scan()}
    assert listed == {v.key: v.metadata for v in vectors}


def test_query_top_k_closest_first_with_distance_and_metadata(store: VectorStore) -> None:
    store.put(
        [
            Vector("t1#same", [1.0, 0.0, 0.0, 0.0], meta(text="same")),
            Vector("t1#near", [1.0, 1.0, 0.0, 0.0], meta(text="near")),
            Vector("t1#far", [0.0, 1.0, 0.0, 0.0], meta(text="far")),
            Vector("t1#opposite", [-1.0, 0.0, 0.0, 0.0], meta(text="opposite")),
        ]
    )
    found = store.query([2.0, 0.0, 0.0, 0.0], top_k=3, filter={"tenant_id": "t1"})
    assert [m.key for m in found] == ["t1#same", "t1#near", "t1#far"]
    assert [round(m.distance, 4) for m in found] == [0.0, round(1 - 2**-0.5, 4), 1.0]
    assert found[0].metadata == meta(text="same")


def test_euclidean_distance(euclidean: VectorStore) -> None:
    euclidean.put(
        [
            Vector("t1#a", [0.0, 0.0, 3.0, 4.0], meta()),
            Vector("t1#b", [0.0, 0.0, 0.0, 1.0], meta()),
        ]
    )
    found = euclidean.query([0.0, 0.0, 0.0, 0.0], top_k=5, filter={"tenant_id": "t1"})
    assert [(m.key, round(m.distance, 4)) for m in found] == [("t1#b", 1.0), ("t1#a", 5.0)]


def test_the_owner_filter_confines_a_query(store: VectorStore) -> None:
    vec = [1.0, 0.0, 0.0, 0.0]
    store.put(
        [
            Vector("t1#mine", vec, meta()),
            Vector("t1#other-customer", vec, meta(customer="c2")),
            Vector("t2#other-tenant", vec, meta(tenant="t2")),
            Vector("t1#expired", vec, meta(expires_at=1_500)),
            Vector("t1#tenant-level", vec, meta(customer="-")),
        ]
    )
    found = store.query(vec, top_k=10, filter=Owner("t1", "c1").filter(1_600))
    assert [m.key for m in found] == ["t1#mine"]
    assert [m.key for m in store.query(vec, top_k=10, filter=Owner("t1").filter(1_600))] == [
        "t1#tenant-level"
    ]


@pytest.mark.parametrize(
    ("filter", "keys"),
    [
        ({"kind": {"$in": ["summary", "remembered"]}}, ["t1#b", "t1#c"]),
        ({"kind": {"$nin": ["summary", "remembered"]}}, ["t1#a"]),
        ({"created_at": {"$gte": 2, "$lt": 3}}, ["t1#b"]),
        ({"$or": [{"kind": "summary"}, {"created_at": {"$lte": 1}}]}, ["t1#a", "t1#c"]),
        ({"kind": {"$ne": "fact"}, "session_id": {"$exists": True}}, ["t1#b", "t1#c"]),
        ({"text": "b"}, []),  # non-filterable: invisible to the filter
    ],
)
def test_filter_operators(store: VectorStore, filter: dict[str, Any], keys: list[str]) -> None:
    store.put(
        [
            Vector("t1#a", [1.0, 0.0, 0.0, 0.0], meta(kind="fact", created_at=1, text="a")),
            Vector("t1#b", [1.0, 0.1, 0.0, 0.0], meta(kind="remembered", created_at=2, text="b")),
            Vector("t1#c", [1.0, 0.2, 0.0, 0.0], meta(kind="summary", created_at=3, text="c")),
        ]
    )
    found = store.query([1.0, 0.0, 0.0, 0.0], top_k=10, filter=filter)
    assert sorted(m.key for m in found) == keys

"""The local S3 Vectors ``QueryVectors`` (issue 18) as boto3 sees it, on moto's server with
:mod:`infra.local.moto_vectors` installed: top-k order, every documented filter operator,
exact distances (cosine and euclidean) and metadata, non-filterable keys, the errors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from infra.local import moto_vectors

BUCKET = "query-tests"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    moto_vectors.install()  # before the server builds its S3 Vectors routes
    moto_vectors.install()  # idempotent
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3v = boto3.client(
        "s3vectors",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3v.create_vector_bucket(vectorBucketName=BUCKET)
    for name, metric in (("cos", "cosine"), ("euc", "euclidean")):
        s3v.create_index(
            vectorBucketName=BUCKET,
            indexName=name,
            dataType="float32",
            dimension=2,
            distanceMetric=metric,
            metadataConfiguration={"nonFilterableMetadataKeys": ["text"]},
        )
        s3v.put_vectors(vectorBucketName=BUCKET, indexName=name, vectors=VECTORS)
    yield s3v
    server.stop()
    moto_vectors.uninstall()


VECTORS: list[dict[str, Any]] = [
    {
        "key": "a",
        "data": {"float32": [1.0, 0.0]},
        "metadata": {"tenant": "t1", "n": 1, "tags": ["x", "y"], "ok": True, "text": "alpha"},
    },
    {
        "key": "b",
        "data": {"float32": [0.0, 1.0]},
        "metadata": {"tenant": "t1", "n": 2, "tags": ["y"], "ok": False, "text": "beta"},
    },
    {
        "key": "c",
        "data": {"float32": [1.0, 1.0]},
        "metadata": {"tenant": "t2", "n": 3, "text": "gamma"},
    },
    {
        "key": "d",
        "data": {"float32": [-1.0, 0.0]},
        "metadata": {"tenant": "t2", "n": 4.5, "ok": True, "text": "delta"},
    },
]


def query(client: Any, index: str = "cos", **kwargs: Any) -> dict[str, Any]:
    params = {"topK": 10, "queryVector": {"float32": [1.0, 0.0]}, **kwargs}
    result: dict[str, Any] = client.query_vectors(
        vectorBucketName=BUCKET, indexName=index, **params
    )
    return result


def keys(client: Any, filter_: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
    if filter_ is not None:
        kwargs["filter"] = filter_
    return [v["key"] for v in query(client, **kwargs)["vectors"]]


def test_top_k_is_ordered_by_cosine_distance_with_exact_values(client: Any) -> None:
    result = query(client, topK=3, returnDistance=True)
    assert result["distanceMetric"] == "cosine"
    got = [(v["key"], v["distance"]) for v in result["vectors"]]
    # 1 - cos: a is the query (0), c at 45 degrees (1 - 1/sqrt 2), b orthogonal (1).
    assert [k for k, _ in got] == ["a", "c", "b"]
    assert got[0][1] == pytest.approx(0.0, abs=1e-7)
    assert got[1][1] == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert got[2][1] == pytest.approx(1.0, abs=1e-7)
    assert keys(client) == ["a", "c", "b", "d"]  # d opposite: distance 2, last


def test_euclidean_distances_are_exact(client: Any) -> None:
    result = query(client, index="euc", queryVector={"float32": [1.0, 0.0]}, returnDistance=True)
    assert result["distanceMetric"] == "euclidean"
    got = {v["key"]: v["distance"] for v in result["vectors"]}
    assert [v["key"] for v in result["vectors"]] == ["a", "c", "b", "d"]
    assert got == pytest.approx({"a": 0.0, "c": 1.0, "b": math.sqrt(2), "d": 2.0}, abs=1e-6)


def test_distance_and_metadata_only_when_asked(client: Any) -> None:
    bare = query(client, topK=1)["vectors"][0]
    assert bare == {"key": "a"}
    full = query(client, topK=1, returnMetadata=True, returnDistance=True)["vectors"][0]
    assert full["metadata"] == VECTORS[0]["metadata"]  # non-filterable text comes back too
    assert "distance" in full


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"tenant": "t1"}, ["a", "b"]),  # a bare value is $eq
        ({"tenant": {"$eq": "t2"}}, ["c", "d"]),
        ({"tags": "x"}, ["a"]),  # $eq on a list matches any element
        ({"tags": {"$eq": "y"}}, ["a", "b"]),
        ({"tenant": {"$ne": "t1"}}, ["c", "d"]),
        ({"tags": {"$ne": "x"}}, ["c", "b", "d"]),  # no tags: not equal
        ({"n": {"$gt": 2}}, ["c", "d"]),
        ({"n": {"$gte": 2}}, ["c", "b", "d"]),
        ({"n": {"$lt": 2}}, ["a"]),
        ({"n": {"$lte": 3}}, ["a", "c", "b"]),
        ({"n": {"$gt": 1, "$lt": 4}}, ["c", "b"]),  # several operators: $and
        ({"n": {"$in": [1, 4.5]}}, ["a", "d"]),
        ({"tags": {"$in": ["x", "z"]}}, ["a"]),
        ({"tenant": {"$nin": ["t2"]}}, ["a", "b"]),
        ({"tags": {"$nin": ["x"]}}, ["c", "b", "d"]),
        ({"ok": {"$exists": True}}, ["a", "b", "d"]),
        ({"ok": {"$exists": False}}, ["c"]),
        ({"ok": True}, ["a", "d"]),  # booleans are not numbers
        ({"n": True}, []),
        ({"tenant": "t1", "n": 2}, ["b"]),  # several keys: $and
        ({"$and": [{"tenant": "t2"}, {"n": {"$gt": 3}}]}, ["d"]),
        ({"$or": [{"n": 1}, {"tenant": "t2"}]}, ["a", "c", "d"]),
        ({"$or": [{"$and": [{"tenant": "t1"}, {"ok": False}]}, {"n": 4.5}]}, ["b", "d"]),
        ({"missing": "x"}, []),
    ],
)
def test_filter_operators(client: Any, filter_: dict[str, Any], expected: list[str]) -> None:
    assert keys(client, filter_) == expected


def test_the_filter_applies_before_top_k(client: Any) -> None:
    # The nearest matching vectors, not the nearest vectors then filtered.
    assert keys(client, {"tenant": "t2"}, topK=1) == ["c"]


def test_a_non_filterable_key_cannot_be_filtered(client: Any) -> None:
    assert keys(client, {"text": "alpha"}) == []
    assert keys(client, {"text": {"$exists": True}}) == []
    assert keys(client, {"text": {"$exists": False}}) == ["a", "c", "b", "d"]


def test_a_wrong_dimension_is_a_validation_error(client: Any) -> None:
    with pytest.raises(ClientError) as info:
        query(client, queryVector={"float32": [1.0, 0.0, 0.0]})
    assert info.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.parametrize(
    "filter_",
    [
        {"n": {"$between": [1, 2]}},
        {"$not": {"n": 1}},
        {"n": {"$in": []}},
        {"n": {"$gt": "2"}},
        {"n": {"$exists": "yes"}},
        {"$and": []},
        {"n": {"$eq": [1, 2]}},
    ],
)
def test_a_malformed_filter_is_a_validation_error(client: Any, filter_: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as info:
        query(client, filter=filter_)
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_top_k_above_the_limit_is_a_validation_error(client: Any) -> None:
    with pytest.raises(ClientError) as info:
        query(client, topK=moto_vectors.MAX_TOP_K + 1)
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_a_missing_index_is_not_found(client: Any) -> None:
    with pytest.raises(ClientError) as info:
        client.query_vectors(
            vectorBucketName=BUCKET, indexName="nope", topK=1, queryVector={"float32": [1, 0]}
        )
    assert info.value.response["Error"]["Code"] == "NotFoundException"


def test_deleted_vectors_are_not_found_by_a_query(client: Any) -> None:
    client.put_vectors(
        vectorBucketName=BUCKET,
        indexName="cos",
        vectors=[{"key": "tmp", "data": {"float32": [1.0, 0.0]}, "metadata": {"tenant": "t9"}}],
    )
    assert keys(client, {"tenant": "t9"}) == ["tmp"]
    client.delete_vectors(vectorBucketName=BUCKET, indexName="cos", keys=["tmp"])
    assert keys(client, {"tenant": "t9"}) == []


def test_the_index_arn_addresses_the_same_index(client: Any) -> None:
    arn = client.get_index(vectorBucketName=BUCKET, indexName="cos")["index"]["indexArn"]
    got = client.query_vectors(indexArn=arn, topK=1, queryVector={"float32": [0.0, 1.0]})
    assert [v["key"] for v in got["vectors"]] == ["b"]


def test_the_local_clouds_moto_process_answers_query_vectors() -> None:
    """The moto process the local cloud starts installs the query (functions reach it
    directly through ``AWS_ENDPOINT_URL_S3VECTORS``)."""
    from infra.local.moto_process import MotoProcess
    from infra.paths import REPO_ROOT

    moto = MotoProcess(lambda_port=0, cwd=REPO_ROOT).start()
    try:
        s3v = boto3.client(
            "s3vectors",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3v.create_vector_bucket(vectorBucketName="proc-bucket")
        s3v.create_index(
            vectorBucketName="proc-bucket",
            indexName="memories",
            dataType="float32",
            dimension=2,
            distanceMetric="cosine",
        )
        s3v.put_vectors(
            vectorBucketName="proc-bucket",
            indexName="memories",
            vectors=[
                {"key": k, "data": {"float32": v}, "metadata": {"tenant_id": t}}
                for k, v, t in (("t1#a", [1.0, 0.0], "t1"), ("t2#b", [1.0, 0.1], "t2"))
            ],
        )
        got = s3v.query_vectors(
            vectorBucketName="proc-bucket",
            indexName="memories",
            topK=5,
            queryVector={"float32": [1.0, 0.0]},
            filter={"tenant_id": {"$eq": "t2"}},
            returnMetadata=True,
        )
        assert [(v["key"], v["metadata"]) for v in got["vectors"]] == [
            ("t2#b", {"tenant_id": "t2"})
        ]
    finally:
        moto.stop()


def test_the_largest_documented_dimension_and_metadata_configuration(client: Any) -> None:
    client.create_index(
        vectorBucketName=BUCKET,
        indexName="wide",
        dataType="float32",
        dimension=4096,
        distanceMetric="euclidean",
        metadataConfiguration={"nonFilterableMetadataKeys": ["text"]},
    )
    described = client.get_index(vectorBucketName=BUCKET, indexName="wide")["index"]
    assert described["dimension"] == 4096
    assert described["metadataConfiguration"] == {"nonFilterableMetadataKeys": ["text"]}
    vector = [0.0] * 4096
    vector[4095] = 3.0
    client.put_vectors(
        vectorBucketName=BUCKET,
        indexName="wide",
        vectors=[{"key": "w", "data": {"float32": vector}}],
    )
    got = query(client, index="wide", queryVector={"float32": [0.0] * 4096}, returnDistance=True)
    assert got["vectors"] == [{"key": "w", "distance": 3.0}]


def test_a_zero_query_vector_on_a_cosine_index_is_a_validation_error(client: Any) -> None:
    with pytest.raises(ClientError) as info:
        query(client, queryVector={"float32": [0.0, 0.0]})
    assert info.value.response["Error"]["Code"] == "ValidationException"

"""The :class:`~stratus.memory.store.VectorStore` on Amazon S3 Vectors (boto3 ``s3vectors``).

The same code runs on AWS and locally (moto stores the vectors; the local AWS front
answers ``QueryVectors``). Requests are chunked to the service's limits (500 vectors a
put or delete, 100 keys a get, 1,000 a list page, top-k at most 100). Round trips: a
put, get, delete or query is one request; a listing is one per 1,000 vectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from stratus.aws import AwsClients
from stratus.memory.store import Distance, Match, Vector

PUT_BATCH = 500
DELETE_BATCH = 500
GET_BATCH = 100
LIST_PAGE = 1000
MAX_TOP_K = 100


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _number(value: Any) -> Any:
    """Metadata numbers as plain ints when whole (the service may answer floats)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _metadata(raw: Any) -> dict[str, Any]:
    return {k: _number(v) for k, v in (raw or {}).items()} if isinstance(raw, dict) else {}


class S3VectorStore:
    """One index of one vector bucket."""

    def __init__(
        self, clients: AwsClients, bucket: str, index: str, *, distance: Distance = "cosine"
    ) -> None:
        self._clients = clients
        self._where = {"vectorBucketName": bucket, "indexName": index}
        self._distance: Distance = distance

    @property
    def distance(self) -> Distance:
        return self._distance

    @property
    def _client(self) -> Any:
        return self._clients.client("s3vectors")

    def put(self, vectors: Sequence[Vector]) -> None:
        for chunk in _chunks(vectors, PUT_BATCH):
            self._client.put_vectors(
                **self._where,
                vectors=[
                    {
                        "key": v.key,
                        "data": {"float32": [float(x) for x in v.data or ()]},
                        "metadata": v.metadata,
                    }
                    for v in chunk
                ],
            )

    def get(self, keys: Sequence[str]) -> list[Vector]:
        found: list[Vector] = []
        for chunk in _chunks(list(keys), GET_BATCH):
            answer = self._client.get_vectors(
                **self._where, keys=list(chunk), returnData=False, returnMetadata=True
            )
            found.extend(
                Vector(v["key"], None, _metadata(v.get("metadata"))) for v in answer["vectors"]
            )
        return found

    def delete(self, keys: Sequence[str]) -> None:
        for chunk in _chunks(list(keys), DELETE_BATCH):
            self._client.delete_vectors(**self._where, keys=list(chunk))

    def scan(self) -> Iterator[Vector]:
        token: str | None = None
        while True:
            page = self._client.list_vectors(
                **self._where,
                maxResults=LIST_PAGE,
                returnData=False,
                returnMetadata=True,
                **({"nextToken": token} if token else {}),
            )
            for v in page.get("vectors", []):
                yield Vector(v["key"], None, _metadata(v.get("metadata")))
            token = page.get("nextToken")
            if not token:
                return

    def query(
        self, vector: Sequence[float], *, top_k: int, filter: Mapping[str, Any]
    ) -> list[Match]:
        answer = self._client.query_vectors(
            **self._where,
            topK=max(1, min(top_k, MAX_TOP_K)),
            queryVector={"float32": [float(x) for x in vector]},
            filter=dict(filter),
            returnMetadata=True,
            returnDistance=True,
        )
        return [
            Match(v["key"], float(v.get("distance", 0.0)), _metadata(v.get("metadata")))
            for v in answer.get("vectors", [])
        ]

"""An in-memory :class:`~stratus.memory.store.VectorStore` with S3 Vectors' semantics:
exact top-k by distance, the documented metadata filter, replace on the same key."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from stratus.memory.store import (
    NON_FILTERABLE,
    Distance,
    Match,
    Vector,
    distance_between,
    matches,
)


class MemoryVectorStore:
    def __init__(self, *, dimension: int = 256, distance: Distance = "cosine") -> None:
        self.dimension = dimension
        self._distance: Distance = distance
        self._vectors: dict[str, Vector] = {}
        self._lock = threading.Lock()
        #: Calls per operation (tests and the bench count round trips with it).
        self.calls: dict[str, int] = {}

    @property
    def distance(self) -> Distance:
        return self._distance

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    def put(self, vectors: Sequence[Vector]) -> None:
        self._count("put")
        for vector in vectors:
            if vector.data is None or len(vector.data) != self.dimension:
                raise ValueError(f"vector {vector.key} must have dimension {self.dimension}")
        with self._lock:
            for vector in vectors:
                self._vectors[vector.key] = Vector(
                    vector.key, [float(x) for x in vector.data or ()], dict(vector.metadata)
                )

    def get(self, keys: Sequence[str]) -> list[Vector]:
        self._count("get")
        with self._lock:
            found = [self._vectors[k] for k in keys if k in self._vectors]
        return [Vector(v.key, None, dict(v.metadata)) for v in found]

    def delete(self, keys: Sequence[str]) -> None:
        self._count("delete")
        with self._lock:
            for key in keys:
                self._vectors.pop(key, None)

    def scan(self) -> Iterator[Vector]:
        self._count("list")
        with self._lock:
            found = list(self._vectors.values())
        return iter([Vector(v.key, None, dict(v.metadata)) for v in found])

    def query(
        self, vector: Sequence[float], *, top_k: int, filter: Mapping[str, Any]
    ) -> list[Match]:
        self._count("query")
        if len(vector) != self.dimension:
            raise ValueError(f"query vector must have dimension {self.dimension}")
        with self._lock:
            found = [v for v in self._vectors.values() if matches(filter, _filterable(v.metadata))]
        scored = sorted(
            (distance_between(self._distance, vector, v.data or ()), v.key, v) for v in found
        )
        return [Match(key, d, dict(v.metadata)) for d, key, v in scored[:top_k]]


def _filterable(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a filter sees: the index's non-filterable keys (``text``) are invisible."""
    return {k: v for k, v in metadata.items() if k not in NON_FILTERABLE}

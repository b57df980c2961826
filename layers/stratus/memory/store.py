"""The vector store port, its records, the owner of a memory and the filters built from it.

:class:`VectorStore` is what :class:`~stratus.memory.service.MemoryService` needs from
Amazon S3 Vectors: put, get, delete, list and query one index. The adapter
(:mod:`stratus.memory.s3vectors`) and the fake (:mod:`stratus.memory.fake`) pass the
same contract tests; :func:`matches` is the documented metadata filter semantics the
fake (and the local cloud's ``QueryVectors``) implement.

Tenant isolation lives here: an :class:`Owner` is built from the authenticated caller
(tenant and end customer), names the vector keys (``"{tenant_id}#{memory_id}"``) and
builds every query's filter (``tenant_id`` and ``customer_id`` ``$eq``, ``expires_at``
``$gt`` now). Nothing a model or a request body says reaches a filter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Distance = Literal["cosine", "euclidean"]
Kind = Literal["remembered", "fact", "summary"]

#: The end customer of a request without one (a tenant-level memory).
NO_CUSTOMER = "-"
#: A memory id: 32 lowercase hex characters.
MEMORY_ID = re.compile(r"^[0-9a-f]{32}$")
#: Metadata keys that may be filtered on (``text`` is non-filterable).
FILTERABLE = ("tenant_id", "customer_id", "agent", "kind", "session_id", "created_at", "expires_at")
NON_FILTERABLE = ("text",)


@dataclass(frozen=True)
class Vector:
    """One stored vector: its key, its data (None when not asked for) and metadata."""

    key: str
    data: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """One query result: the key, the distance (lower is closer) and the metadata."""

    key: str
    distance: float
    metadata: dict[str, Any] = field(default_factory=dict)


class VectorStore(Protocol):
    """One vector index (S3 Vectors: a bucket's index)."""

    @property
    def distance(self) -> Distance: ...

    def put(self, vectors: Sequence[Vector]) -> None:
        """Create or replace ``vectors`` (same key: replaced)."""

    def get(self, keys: Sequence[str]) -> list[Vector]:
        """The vectors of ``keys`` that exist, with metadata, without data."""

    def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` (unknown keys are ignored)."""

    def scan(self) -> Iterator[Vector]:
        """Every vector of the index with its metadata (all pages), without data."""

    def query(
        self, vector: Sequence[float], *, top_k: int, filter: Mapping[str, Any]
    ) -> list[Match]:
        """The ``top_k`` vectors closest to ``vector`` among those ``filter`` admits,
        closest first, with distance and metadata."""


@dataclass(frozen=True)
class Owner:
    """Whose memories: the authenticated tenant and end customer (``-``: none)."""

    tenant_id: str
    customer_id: str = NO_CUSTOMER

    @classmethod
    def of(cls, tenant_id: str, customer_id: str | None) -> Owner:
        return cls(tenant_id, customer_id or NO_CUSTOMER)

    def key(self, memory_id: str) -> str:
        return f"{self.tenant_id}#{memory_id}"

    def owns(self, vector: Vector | Match) -> bool:
        """Whether ``vector`` is this owner's (key prefix and metadata both)."""
        meta = vector.metadata
        return (
            vector.key.startswith(f"{self.tenant_id}#")
            and meta.get("tenant_id") == self.tenant_id
            and meta.get("customer_id") == self.customer_id
        )

    def filter(self, now: float) -> dict[str, Any]:
        """Every query's filter: this tenant, this customer, not expired."""
        return {
            "$and": [
                {"tenant_id": {"$eq": self.tenant_id}},
                {"customer_id": {"$eq": self.customer_id}},
                {"expires_at": {"$gt": int(now)}},
            ]
        }


def memory_id_of(key: str) -> str:
    """The memory id of a vector key (``tenant#id``)."""
    return key.rpartition("#")[2]


def score(distance: Distance, value: float) -> float:
    """Similarity in 0..1 from a distance: cosine ``1 - d`` (clamped), euclidean
    ``1 / (1 + d)``."""
    if distance == "cosine":
        return max(0.0, min(1.0, 1.0 - value))
    return 1.0 / (1.0 + max(0.0, value))


def distance_between(kind: Distance, a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine distance (1 - cosine similarity) or euclidean distance, as S3 Vectors."""
    if len(a) != len(b):
        raise ValueError(f"dimension mismatch: {len(a)} != {len(b)}")
    if kind == "euclidean":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return 1.0 - (dot / norm if norm else 0.0)


_MISSING = object()


def matches(filter: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` passes ``filter`` (the S3 Vectors metadata filter language:
    ``$eq $ne $gt $gte $lt $lte $in $nin $exists $and $or``; ``{"k": v}`` is ``$eq``; a
    missing key passes ``$ne`` / ``$nin`` only; ranges compare numbers only)."""
    for name, condition in filter.items():
        if name == "$and":
            if not all(matches(part, metadata) for part in condition):
                return False
        elif name == "$or":
            if not any(matches(part, metadata) for part in condition):
                return False
        elif name.startswith("$"):
            raise ValueError(f"unknown filter operator {name}")
        elif not _holds(metadata.get(name, _MISSING), condition):
            return False
    return True


def _holds(value: Any, condition: Any) -> bool:
    if not isinstance(condition, Mapping):
        condition = {"$eq": condition}
    for op, operand in condition.items():
        if op == "$exists":
            if (value is not _MISSING) != bool(operand):
                return False
            continue
        if value is _MISSING:
            if op in ("$ne", "$nin"):
                continue  # a vector without the key is not equal to anything
            return False
        values = value if isinstance(value, list) else [value]
        if not _compare(op, values, operand):
            return False
    return True


def _compare(op: str, values: list[Any], operand: Any) -> bool:
    """``op`` on a value (a list value matches when any element does; ``$ne``/``$nin``
    when none does)."""
    if op == "$eq":
        return operand in values
    if op == "$ne":
        return operand not in values
    if op == "$in":
        return any(v in operand for v in values)
    if op == "$nin":
        return not any(v in operand for v in values)
    ordered = {"$gt": lambda v: v > operand, "$gte": lambda v: v >= operand}
    ordered |= {"$lt": lambda v: v < operand, "$lte": lambda v: v <= operand}
    if op not in ordered:
        raise ValueError(f"unknown filter operator {op}")
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return isinstance(operand, int | float) and any(ordered[op](v) for v in numbers)

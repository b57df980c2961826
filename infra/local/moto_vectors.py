"""Make moto's S3 Vectors answer ``QueryVectors``, exactly as the API documents it.

moto 5.2 stores vector buckets, indexes and vectors (``CreateIndex``, ``PutVectors``,
``GetVectors``, ``ListVectors``, ``DeleteVectors``) but has no ``QueryVectors``, and it
forgets an index's ``metadataConfiguration``. With :func:`install` (the moto server
process calls it at start, :mod:`infra.local.moto_process`) the same boto3 ``s3vectors``
code that runs on AWS runs locally:

* ``CreateIndex`` keeps ``metadataConfiguration.nonFilterableMetadataKeys`` (and
  ``GetIndex`` reports it); those keys are stored and returned, never filtered on. It
  also accepts the documented maximum dimension, 4096 (moto stops at 4095).
* ``QueryVectors`` is an exact (not approximate) nearest-neighbour search over every
  vector of the index that matches ``filter``: ``topK`` (1..100) results ordered by
  distance ascending (ties by key), ``distance`` when ``returnDistance``, ``metadata``
  when ``returnMetadata``, and the index's ``distanceMetric``. Distances are computed
  on the float32 values S3 Vectors stores: ``cosine`` is ``1 - cos(q, v)``,
  ``euclidean`` is ``|q - v|`` (and both are reported as float32).
* The metadata filter (:func:`matches`): ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``,
  ``$lte``, ``$in``, ``$nin``, ``$exists``, ``$and``, ``$or``; a bare value is an
  implicit ``$eq``, several keys (or several operators on one key) an implicit
  ``$and``. ``$eq`` / ``$in`` on a list-valued key match when any element matches;
  ``$ne`` / ``$nin`` match vectors without the key (as ``$exists: false`` does), and
  ``$gt`` .. ``$lte`` only numbers. A non-filterable key is invisible to the filter.
  A malformed filter (an unknown operator, ``$in`` without a non-empty list, a range
  on a non-number, ``$exists`` without a boolean) is a ``ValidationException``.
* Errors as the API documents them: a query vector of the wrong dimension (or a zero
  vector on a cosine index) and a ``topK`` outside 1..100 are ``ValidationException``;
  a missing bucket or index is ``NotFoundException``.

It changes moto's classes and URL map process-wide, before the server serves its first
S3 Vectors request; it is idempotent and :func:`uninstall` reverts it.
"""

from __future__ import annotations

import functools
import heapq
import math
import operator
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

QUERY_PATH = "{0}/QueryVectors$"
MAX_TOP_K = 100
MAX_DIMENSION = 4096
METRICS = ("cosine", "euclidean")
COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", *COMPARISONS})
LOGICAL_OPERATORS = frozenset({"$and", "$or"})

_PATCHED: list[tuple[Any, str, Any]] = []
_MISSING = object()


class FilterError(ValueError):
    """The filter is not one the API accepts (answered as ``ValidationException``)."""


# -- the filter ---------------------------------------------------------------------------

Predicate = Callable[[Mapping[str, Any]], bool]


def _primitive(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(stored: Any, wanted: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``True`` is not ``1``)."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored is wanted
    if _number(stored) and _number(wanted):
        return bool(stored == wanted)
    return type(stored) is type(wanted) and stored == wanted


def _equals(stored: Any, wanted: Any) -> bool:
    if stored is _MISSING:
        return False
    if isinstance(stored, list):
        return any(_same(item, wanted) for item in stored)
    return _same(stored, wanted)


def _check_operand(key: str, op: str, operand: Any) -> None:
    if op not in FIELD_OPERATORS:
        raise FilterError(f"unknown operator {op!r} on {key!r}")
    if op in ("$eq", "$ne") and not _primitive(operand):
        raise FilterError(f"{op} on {key!r} needs a string, number or boolean")
    if op in COMPARISONS and not _number(operand):
        raise FilterError(f"{op} on {key!r} needs a number")
    if op in ("$in", "$nin") and (
        not isinstance(operand, list) or not operand or not all(map(_primitive, operand))
    ):
        raise FilterError(f"{op} on {key!r} needs a non-empty array of primitives")
    if op == "$exists" and not isinstance(operand, bool):
        raise FilterError(f"$exists on {key!r} needs a boolean")


def _test(op: str, operand: Any) -> Callable[[Any], bool]:
    """The check of one operator on a stored value (``_MISSING`` when absent)."""
    if op == "$eq" and isinstance(operand, str):  # the tenant and customer filters: fast
        return lambda stored: (
            stored == operand
            if stored.__class__ is str
            else isinstance(stored, list) and _equals(stored, operand)
        )
    if op == "$eq":
        return lambda stored: _equals(stored, operand)
    if op == "$ne":
        return lambda stored: not _equals(stored, operand)
    if op == "$in":
        return lambda stored: any(_equals(stored, value) for value in operand)
    if op == "$nin":
        return lambda stored: not any(_equals(stored, value) for value in operand)
    if op == "$exists":
        return lambda stored: (stored is not _MISSING) is operand
    compare = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
    order = compare[op]
    return lambda stored: _number(stored) and bool(order(stored, operand))


def _field(key: str, condition: Any, hidden: frozenset[str]) -> Predicate:
    if not isinstance(condition, Mapping):
        if not _primitive(condition):
            raise FilterError(f"the value of {key!r} must be a primitive or an operator object")
        condition = {"$eq": condition}  # a bare value is $eq
    if not condition:
        raise FilterError(f"the operator object of {key!r} is empty")
    for op, operand in condition.items():
        _check_operand(key, op, operand)
    tests = [_test(op, operand) for op, operand in condition.items()]
    if key in hidden:  # non-filterable: as if the vector had no such key
        outcome = all(test(_MISSING) for test in tests)
        return lambda metadata: outcome
    if len(tests) == 1:
        (test,) = tests
        return lambda metadata: test(metadata.get(key, _MISSING))

    def check(metadata: Mapping[str, Any]) -> bool:
        stored = metadata.get(key, _MISSING)
        return all(test(stored) for test in tests)

    return check


def _all(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    def every(metadata: Mapping[str, Any]) -> bool:
        for part in parts:  # noqa: SIM110 - a loop: all() over a generator is 2x slower
            if not part(metadata):
                return False
        return True

    return every


def _any(parts: list[Predicate]) -> Predicate:
    def some(metadata: Mapping[str, Any]) -> bool:
        for part in parts:  # noqa: SIM110 - a loop: any() over a generator is 2x slower
            if part(metadata):
                return True
        return False

    return some


def compile_filter(filter_: Any, hidden: frozenset[str] = frozenset()) -> Predicate:
    """The predicate of a ``QueryVectors`` filter on a vector's metadata, checked once:
    raises :class:`FilterError` for a filter the API rejects. Keys in ``hidden``
    (non-filterable) are treated as absent."""
    if not isinstance(filter_, Mapping):
        raise FilterError("a filter is a JSON object")
    parts: list[Predicate] = []
    for key, condition in filter_.items():
        if key in LOGICAL_OPERATORS:
            if not isinstance(condition, list) or not condition:
                raise FilterError(f"{key} needs a non-empty array of filters")
            inner = [compile_filter(part, hidden) for part in condition]
            parts.append(_all(inner) if key == "$and" else _any(inner))
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top of a filter")
        else:
            parts.append(_field(key, condition, hidden))  # several keys: an implicit $and
    return _all(parts) if parts else (lambda metadata: True)


def matches(
    filter_: Mapping[str, Any], metadata: Mapping[str, Any], hidden: frozenset[str] = frozenset()
) -> bool:
    """Whether ``metadata`` passes ``filter_`` (see :func:`compile_filter`)."""
    return compile_filter(filter_, hidden)(metadata)


# -- distances ----------------------------------------------------------------------------


def _rounded(value: float) -> float:
    return float(array("f", [value])[0])


def _prepared(values: Sequence[float]) -> tuple[array[float], float]:
    """A vector as S3 Vectors stores it (float32) and its L2 norm."""
    stored = array("f", values)
    return stored, math.sqrt(sum(map(operator.mul, stored, stored)))


def _distance(metric: str, query: tuple[array[float], float], vector: Any) -> float:
    q, q_norm = query
    v, v_norm = vector
    if metric == "euclidean":
        return _rounded(math.sqrt(sum((a - b) * (a - b) for a, b in zip(q, v, strict=True))))
    if q_norm == 0.0 or v_norm == 0.0:
        return 1.0
    return _rounded(1.0 - sum(map(operator.mul, q, v)) / (q_norm * v_norm))


def distance(metric: str, query: Sequence[float], vector: Sequence[float]) -> float:
    """The distance S3 Vectors reports between two float32 vectors."""
    return _distance(metric, _prepared(query), _prepared(vector))


def _cached(vector: Any) -> tuple[array[float], float]:
    """The prepared data of a stored moto vector, kept on it (PutVectors replaces the
    vector object, so a stale cache cannot outlive its data)."""
    data = vector.data["float32"]
    cached = getattr(vector, "_stratus_prepared", None)
    if cached is None or cached[0] is not data:
        cached = (data, _prepared(data))
        vector._stratus_prepared = cached
    return cached[1]


# -- the moto side ------------------------------------------------------------------------


def _hidden_keys(index: Any) -> frozenset[str]:
    return frozenset(getattr(index, "non_filterable_keys", ()))


def query(index: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``QueryVectors`` result for one moto ``Index`` and the request's parameters."""
    from moto.s3vectors.exceptions import ValidationError

    top_k = params.get("topK")
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise ValidationError(
            "1 validation error detected. Value at '/topK' failed to satisfy constraint: "
            f"Member must be between 1 and {MAX_TOP_K}, inclusive"
        )
    wanted = (params.get("queryVector") or {}).get("float32")
    if not isinstance(wanted, list) or not wanted:
        raise ValidationError("queryVector must have a float32 vector")
    if len(wanted) != index.dimension:
        raise ValidationError(
            f"Query vector contains {len(wanted)} dimensions, but index dimension "
            f"is {index.dimension}"
        )
    metric = index.distance_metric
    if metric == "cosine" and not any(wanted):
        raise ValidationError("Query vector must not be a zero vector for cosine distance")
    filter_ = params.get("filter")
    try:
        passes = None if filter_ is None else compile_filter(filter_, _hidden_keys(index))
    except FilterError as exc:
        raise ValidationError(f"Invalid query filter: {exc}") from None
    prepared = _prepared(wanted)
    candidates = [
        vector
        for vector in list(index.vectors.values())
        if passes is None or passes(vector.metadata or {})
    ]
    scored = heapq.nsmallest(
        top_k,
        ((_distance(metric, prepared, _cached(v)), v.key, v) for v in candidates),
        key=lambda item: (item[0], item[1]),
    )
    results = []
    for dist, key, vector in scored:
        item: dict[str, Any] = {"key": key}
        if params.get("returnDistance"):
            item["distance"] = dist
        if params.get("returnMetadata"):
            item["metadata"] = dict(vector.metadata or {})
        results.append(item)
    return {"vectors": results, "distanceMetric": metric}


def install() -> None:
    """Serve ``QueryVectors`` and keep indexes' non-filterable keys, process-wide."""
    from moto.core.responses import ActionResult
    from moto.s3vectors import urls
    from moto.s3vectors.responses import S3VectorsResponse

    if _PATCHED:
        return

    def query_vectors(self: Any) -> Any:
        index = self.s3vectors_backend.get_index(
            vector_bucket_name=self._get_param("vectorBucketName"),
            index_name=self._get_param("indexName"),
            index_arn=self._get_param("indexArn"),
        )
        params = {
            name: self._get_param(name)
            for name in ("topK", "queryVector", "filter", "returnMetadata", "returnDistance")
        }
        return ActionResult(query(index, params))

    original_create = S3VectorsResponse.create_index

    @functools.wraps(original_create)
    def create_index(self: Any) -> Any:
        dimension = self._get_param("dimension")
        if dimension == MAX_DIMENSION:  # moto refuses 4096, which S3 Vectors allows
            self.params["dimension"] = MAX_DIMENSION - 1
        result = original_create(self)
        config = self._get_param("metadataConfiguration") or {}
        index = self.s3vectors_backend.get_index(
            vector_bucket_name=self._get_param("vectorBucketName")
            or _bucket_name(self._get_param("vectorBucketArn")),
            index_name=self._get_param("indexName"),
            index_arn=None,
        )
        index.dimension = dimension
        index.non_filterable_keys = tuple(config.get("nonFilterableMetadataKeys") or ())
        if config:
            index.metadata_configuration = dict(config)
        return result

    _PATCHED.append((S3VectorsResponse, "query_vectors", None))
    S3VectorsResponse.query_vectors = query_vectors  # type: ignore[attr-defined]
    _PATCHED.append((S3VectorsResponse, "create_index", original_create))
    S3VectorsResponse.create_index = create_index  # type: ignore[method-assign]
    _PATCHED.append((urls.url_paths, QUERY_PATH, None))
    urls.url_paths[QUERY_PATH] = S3VectorsResponse.dispatch


def _bucket_name(arn: str | None) -> str | None:
    # arn:aws:s3vectors:<region>:<account>:bucket/<name>
    return arn.rsplit("/", 1)[-1] if arn else None


def uninstall() -> None:
    """Put moto back as it was (routes already built by a running server stay)."""
    while _PATCHED:
        owner, name, original = _PATCHED.pop()
        if isinstance(owner, dict):
            owner.pop(name, None)
        elif original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)

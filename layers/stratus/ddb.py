"""Small helpers over the low-level DynamoDB client (thread-safe, unlike resources).

The gateway's stores run on many threads at once (tests drive 50 concurrent
calls through one process), and boto3 resources are not thread-safe, so they
use the shared client with explicit (de)serialisation.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from stratus import aws

_SER = TypeSerializer()
_DE = TypeDeserializer()


def client() -> Any:
    return aws.client("dynamodb")


def values(**items: Any) -> dict[str, Any]:
    """``ExpressionAttributeValues`` from keyword arguments (``:name`` -> value)."""
    return {f":{name}": _SER.serialize(_number(value)) for name, value in items.items()}


def key(**items: Any) -> dict[str, Any]:
    return {name: _SER.serialize(value) for name, value in items.items()}


def item(raw: dict[str, Any] | None) -> dict[str, Any]:
    """A plain dict from a DynamoDB item (numbers as ``Decimal``)."""
    return {name: _DE.deserialize(value) for name, value in (raw or {}).items()}


def serialize(data: dict[str, Any]) -> dict[str, Any]:
    return {name: _SER.serialize(_number(value)) for name, value in data.items()}


def conditional_failed(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return bool(response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def _number(value: Any) -> Any:
    if isinstance(value, float):
        value = Decimal(str(value))
    if isinstance(value, Decimal):
        # Plain notation: quantized zeros print as "0E-8", which not every parser takes.
        return Decimal(format(value, "f"))
    return value

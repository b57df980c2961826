"""AWS clients, created once per process on first use and then reused.

boto3 honours ``AWS_ENDPOINT_URL`` by itself, which is how the same code talks
to the embedded local cloud. Timeouts are short and retries use the SDK's
standard mode: a Lambda that waits on a stuck connection is billed for nothing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
)


@lru_cache(maxsize=1)
def session() -> boto3.session.Session:
    return boto3.session.Session()


@lru_cache(maxsize=16)
def client(service: str) -> Any:
    return session().client(service, config=_CONFIG)  # type: ignore[call-overload]


@lru_cache(maxsize=16)
def table(name: str) -> Any:
    """A DynamoDB ``Table`` resource (typed item (de)serialisation for free)."""
    return session().resource("dynamodb", config=_CONFIG).Table(name)


def reset() -> None:
    """Forget every client (tests switch endpoints and credentials)."""
    table.cache_clear()
    client.cache_clear()
    session.cache_clear()

"""AWS clients, created once per process on first use and then reused.

:class:`AwsClients` is owned by the process's composition root
(:mod:`stratus.composition`); adapters receive the clients they need from it.
boto3 honours ``AWS_ENDPOINT_URL`` by itself, which is how the same code talks
to the embedded local cloud. Timeouts are short and retries use the SDK's
standard mode: a Lambda that waits on a stuck connection is billed for nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
)


class AwsClients:
    """One boto3 session and one client per service, built on first use (thread-safe)."""

    def __init__(self, session: boto3.session.Session | None = None) -> None:
        self._session = session
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def session(self) -> boto3.session.Session:
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session

    @property
    def region(self) -> str:
        return self.session.region_name or "us-east-1"

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is not None:
            return found
        session = self.session
        with self._lock:
            if service not in self._clients:
                self._clients[service] = session.client(service, config=CONFIG)  # type: ignore[call-overload]
            return self._clients[service]

    def table(self, name: str) -> Any:
        """A :class:`stratus.ddb.Table` on the shared DynamoDB client."""
        from stratus.ddb import Table

        return Table(name, self.client("dynamodb"))

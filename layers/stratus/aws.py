"""AWS clients, created once per process on first use and then reused.

:class:`AwsClients` is owned by the process's composition root
(:mod:`stratus.composition`); adapters receive the clients they need from it.
boto3 honours ``AWS_ENDPOINT_URL`` by itself, which is how the same code talks
to the embedded local cloud. Timeouts are short and retries use the SDK's
standard mode: a Lambda that waits on a stuck connection is billed for nothing.

Two settings make each request cheaper on the client, where the gateway's waves
spend most of their CPU (measured in ``bench/report.md``, "Critical path"):

* ``parameter_validation=False``: botocore checks every request against the
  service model before sending it (~0.2 ms of CPU for a budget reservation). The
  service checks the same request again and answers a bad one with a
  ``ValidationException``; the runtime's adapters build their requests in code.
* the User-Agent header is built once per set of feature ids
  (:func:`cache_user_agent`) instead of twice per request (~0.3 ms of CPU).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.context import get_context

CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
    parameter_validation=False,
)


def cache_user_agent(client: Any) -> Any:
    """``client`` with its User-Agent string built once per set of feature ids.

    botocore rebuilds the header from its parts when it makes each request and again
    right before signing it, so that feature ids a request registers (retry mode,
    paginator, ...) are listed. The parts are fixed per client but for those ids, so
    the string is kept per set of them: the same header, at a dictionary lookup. A
    botocore without the builder this wraps keeps its own behaviour.
    """
    creator = getattr(client, "_user_agent_creator", None)
    build: Callable[[], str] | None = getattr(creator, "to_string", None)
    if creator is None or build is None or getattr(build, "stratus_cached", False):
        return client
    built: dict[tuple[frozenset[str], frozenset[str]], str] = {}

    def to_string() -> str:
        context = get_context()
        features = (
            frozenset(getattr(creator, "_client_features", None) or ()),
            frozenset(context.features) if context is not None else frozenset(),
        )
        found = built.get(features)
        if found is None:
            found = built[features] = build()
        return found

    to_string.stratus_cached = True  # type: ignore[attr-defined]
    creator.to_string = to_string
    return client


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
                self._clients[service] = cache_user_agent(
                    session.client(service, config=CONFIG)  # type: ignore[call-overload]
                )
            return self._clients[service]

    def table(self, name: str) -> Any:
        """A :class:`stratus.ddb.Table` on the shared DynamoDB client."""
        from stratus.ddb import Table

        return Table(name, self.client("dynamodb"))

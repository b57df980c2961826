"""Sequential AWS round trips on a request's critical path, measured from the SDK.

:func:`recording` wraps ``botocore.client.BaseClient._make_api_call`` (every
boto3 client of the process, Powertools' included) and records each call's
service, operation and start and end times. :meth:`Trace.round_trips` counts
the *sequential* round trips: calls whose time intervals overlap were in flight
together and count once (a wave); a call that starts after every earlier call
ended starts a new wave. With ``latency_s`` every HTTP request sleeps that long
where the network would be: after botocore has built and signed it, before the
response (moto's in-process answer, or the server's) is read, in
``botocore.endpoint.Endpoint._do_get_response`` (each attempt, retries too). A
fixed per-request latency (DynamoDB's few milliseconds) is injected so, and its
cost on the critical path seen: ``latency_s * round_trips`` when calls that can
run together do, while a request's client-side work overlaps the wait of the
requests sent before it, as it does over a network. Tests that count round trips
inject 50 ms: calls issued together then overlap even when a loaded machine starts
their threads late (at 5 ms, a CI box under load split one wave in two now and then).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock


@dataclass(frozen=True)
class TimedCall:
    service: str
    operation: str
    started: float
    ended: float
    table: str = ""


@dataclass
class Trace:
    calls: list[TimedCall] = field(default_factory=list)

    def of(self, service: str | None = None, table: str | None = None) -> list[TimedCall]:
        """The calls to ``service`` (and ``table``: a substring of a table name the call
        touches, transactions and batches included)."""
        return [
            c
            for c in self.calls
            if (service is None or c.service == service) and (table is None or table in c.table)
        ]

    def requests(self, service: str | None = None, table: str | None = None) -> int:
        """Calls made in all (each concurrent one counts)."""
        return len(self.of(service, table))

    def waves(self, service: str | None = None, table: str | None = None) -> list[list[TimedCall]]:
        """The calls grouped into waves of overlapping intervals, in time order."""
        waves: list[list[TimedCall]] = []
        wave_end = float("-inf")
        for call in sorted(self.of(service, table), key=lambda c: c.started):
            if waves and call.started < wave_end:
                waves[-1].append(call)
                wave_end = max(wave_end, call.ended)
            else:
                waves.append([call])
                wave_end = call.ended
        return waves

    def round_trips(self, service: str | None = None, table: str | None = None) -> int:
        """Sequential round trips: concurrent calls count once."""
        return len(self.waves(service, table))

    def describe(self, service: str | None = None, table: str | None = None) -> list[str]:
        """One line per wave: its operations (and tables), for reports and test failures."""
        lines = []
        for n, wave in enumerate(self.waves(service, table), 1):
            ops = ", ".join(f"{c.operation}{f'({c.table})' if c.table else ''}" for c in wave)
            lines.append(f"{n}: {ops}")
        return lines


def tables_of(params: Any) -> str:
    """The table names a request touches, comma-joined: ``TableName``, or the tables of a
    transaction's items and of a batch's ``RequestItems``."""
    if not isinstance(params, dict):
        return ""
    names: list[str] = []
    if isinstance(params.get("TableName"), str):
        names.append(params["TableName"])
    for entry in params.get("TransactItems", []) or []:
        for op in entry.values() if isinstance(entry, dict) else []:
            if isinstance(op, dict) and isinstance(op.get("TableName"), str):
                names.append(op["TableName"])
    if isinstance(params.get("RequestItems"), dict):
        names.extend(str(name) for name in params["RequestItems"])
    return ",".join(dict.fromkeys(names))


@contextlib.contextmanager
def recording(*, latency_s: float = 0.0) -> Iterator[Trace]:
    """Record every botocore API call made while inside (any thread)."""
    from botocore.client import BaseClient
    from botocore.endpoint import Endpoint

    trace = Trace()
    lock = threading.Lock()
    original = BaseClient._make_api_call  # type: ignore[attr-defined]
    send = Endpoint._do_get_response  # type: ignore[attr-defined]  # private, unstubbed

    def timed(client: Any, operation: str, params: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return original(client, operation, params)
        finally:
            call = TimedCall(
                service=client.meta.service_model.service_name,
                operation=operation,
                started=started,
                ended=time.perf_counter(),
                table=tables_of(params),
            )
            with lock:
                trace.calls.append(call)

    def network(endpoint: Any, request: Any, operation_model: Any, context: Any) -> Any:
        time.sleep(latency_s)
        return send(endpoint, request, operation_model, context)

    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(BaseClient, "_make_api_call", timed))
        if latency_s:
            patches.enter_context(mock.patch.object(Endpoint, "_do_get_response", network))
        yield trace

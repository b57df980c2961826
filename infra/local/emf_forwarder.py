"""The local cloud's CloudWatch agent: EMF metric lines of functions -> moto CloudWatch.

In AWS, CloudWatch Logs turns the Embedded Metric Format lines functions print
(Powertools ``metrics``) into metrics. Locally the lines only reach the logs, so
the Lambda runtime hands every output line to :meth:`MetricForwarder.offer`; a
line that is an EMF document is queued (the pump thread never waits on AWS) and
a background thread sends the queued data points with ``PutMetricData``, batched
(at most :data:`BATCH` per call). ``cloudwatch.get_metric_statistics`` then works
on the local cloud as it does in AWS.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

#: Data points per ``PutMetricData`` call.
BATCH = 100
#: How long the sender waits for more lines before sending what it has.
LINGER_S = 0.2
_MARKER = '"CloudWatchMetrics"'
_UNITS = {"NoUnit": "None"}


def emf_data(document: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(namespace, ``MetricDatum``) of each metric value in one EMF document."""
    meta = document.get("_aws")
    if not isinstance(meta, Mapping):
        return
    stamp = datetime.datetime.fromtimestamp(float(meta.get("Timestamp", 0)) / 1000, datetime.UTC)
    for directive in meta.get("CloudWatchMetrics") or []:
        namespace = str(directive.get("Namespace") or "")
        if not namespace:
            continue
        dimension_sets = directive.get("Dimensions") or [[]]
        for metric in directive.get("Metrics") or []:
            name = metric.get("Name")
            raw = document.get(name)
            values = raw if isinstance(raw, list) else [raw]
            for dimension_names in dimension_sets:
                dimensions = [
                    {"Name": str(d), "Value": str(document[d])}
                    for d in dimension_names
                    if d in document
                ]
                for value in values:
                    if not isinstance(value, int | float) or isinstance(value, bool):
                        continue
                    unit = str(metric.get("Unit") or "None")
                    yield (
                        namespace,
                        {
                            "MetricName": str(name),
                            "Dimensions": dimensions,
                            "Timestamp": stamp,
                            "Value": float(value),
                            "Unit": _UNITS.get(unit, unit),
                        },
                    )


class MetricForwarder:
    """Queues EMF lines and sends their data points to CloudWatch from its own thread."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="emf-forwarder", daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self.sent = 0

    def offer(self, line: str) -> None:
        """Called with every function output line; cheap unless it is an EMF document."""
        if _MARKER not in line:
            return
        start = line.find("{")
        if start < 0:
            return
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
        self._lines.put(line[start:])

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, then stop the thread."""
        with self._lock:
            started = self._started
        if started:
            self._lines.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        client: Any = None
        stopping = False
        while not stopping:
            batch: dict[str, list[dict[str, Any]]] = {}
            line = self._lines.get()
            while True:
                if line is None:
                    stopping = True
                    break
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    for namespace, datum in emf_data(json.loads(line)):
                        batch.setdefault(namespace, []).append(datum)
                try:
                    line = self._lines.get(timeout=LINGER_S)
                except queue.Empty:
                    break
            if not batch:
                continue
            try:
                client = client or self._factory()
                for namespace, data in batch.items():
                    for offset in range(0, len(data), BATCH):
                        client.put_metric_data(
                            Namespace=namespace, MetricData=data[offset : offset + BATCH]
                        )
                        self.sent += len(data[offset : offset + BATCH])
            except Exception:  # noqa: S110 - local metrics are best effort, like the agent
                pass

"""The local cloud's recent function log lines, in memory, for the console.

In AWS, CloudWatch Logs keeps what functions print and Logs Insights finds the lines
of one correlation id. Locally the Lambda runtime hands every output line to its
``log_sink``; the local cloud tees them into a :class:`LogBuffer` first: a bounded
ring (the oldest lines fall out) that parses each line (``[<function>] <text>``, the
text a Powertools JSON document when it is one) and answers
:meth:`LogBuffer.query` by ``correlation_id`` (``GET /api/logs?correlation_id=`` of
the console, :mod:`infra.local.console`).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: Lines kept by default (a few MB at most).
CAPACITY = 5000


def parse_line(line: str) -> dict[str, Any]:
    """One log line as the console shows it: function, level, message, correlation id, and
    the JSON document (``record``) when the line is one."""
    function = ""
    text = line
    if line.startswith("[") and "] " in line:
        function, _, text = line[1:].partition("] ")
    record: dict[str, Any] | None = None
    start = text.find("{")
    if start >= 0 and text.rstrip().endswith("}"):
        try:
            parsed = json.loads(text[start:])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            record = parsed
    entry: dict[str, Any] = {"function": function, "line": text}
    if record is not None:
        entry["record"] = record
        entry["level"] = str(record.get("level") or "")
        message = record.get("message")
        entry["message"] = message if isinstance(message, str) else json.dumps(message)
        entry["correlation_id"] = str(record.get("correlation_id") or "")
        if "_aws" in record and "CloudWatchMetrics" in str(record.get("_aws")):
            entry["level"] = "METRICS"
            entry["message"] = "EMF metrics"
    else:
        entry["level"] = "PLATFORM" if text.startswith(("START ", "END ", "REPORT ")) else ""
        entry["message"] = text
        entry["correlation_id"] = ""
    return entry


class LogBuffer:
    """A bounded, thread-safe ring of parsed log lines; each gets a sequence number."""

    def __init__(self, capacity: int = CAPACITY, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._lines: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._clock = clock

    def write(self, line: str) -> None:
        """Keep one line (never raises: a log line must not break an invocation)."""
        try:
            entry = parse_line(line)
        except Exception:
            entry = {
                "function": "",
                "line": line,
                "message": line,
                "level": "",
                "correlation_id": "",
            }
        entry["received_at"] = self._clock()
        with self._lock:
            entry["seq"] = next(self._seq)
            self._lines.append(entry)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lines)

    def query(
        self,
        *,
        correlation_id: str = "",
        function: str = "",
        limit: int = 200,
        after: int = 0,
        include_metrics: bool = False,
        platform: bool = True,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` lines (oldest first) that match: a correlation id matches
        a JSON line's ``correlation_id`` field, or any line that contains it."""
        with self._lock:
            lines = list(self._lines)
        picked = []
        for entry in reversed(lines):
            if entry["seq"] <= after:
                break
            if not include_metrics and entry.get("level") == "METRICS":
                continue
            if not platform and entry.get("level") in ("PLATFORM", ""):
                continue
            if function and function not in entry["function"]:
                continue
            if correlation_id and not (
                entry.get("correlation_id") == correlation_id or correlation_id in entry["line"]
            ):
                continue
            picked.append(entry)
            if len(picked) >= limit:
                break
        picked.reverse()
        return picked

    def tee(self, sink: Callable[[str], None] | None) -> Callable[[str], None]:
        """A log sink that keeps each line here, then hands it to ``sink`` (None: stderr,
        as the Lambda runtime does without a sink)."""
        downstream = sink or _stderr

        def both(line: str) -> None:
            self.write(line)
            downstream(line)

        return both


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()

"""What OpenTelemetry export costs (issue 16): cold start and per call, on against off.

**Cold start.** Each sample is a fresh interpreter (as :mod:`bench.coldstart`) that
imports the agent function's handler (``functions.handlers.api`` with
``STRATUS_AGENT=triage``) and runs its init hooks (``snapshot_restore_py``'s
before-snapshot hooks, as Lambda's init phase does), timed with ``time.perf_counter``,
once with ``STRATUS_OTLP_ENDPOINT`` unset (off: nothing imports ``opentelemetry``) and
once set (on: the SDK and the OTLP/HTTP exporter are imported and the provider built at
init). Samples alternate between the two, so a slow spell hits both.

**Per call.** In this process, the spans one agent invocation with a tool call records
(two ``chat`` spans and one ``execute_tool`` span, as the gateway's bookkeeping and the
runner record them) and the end-of-invocation :func:`stratus.otel.flush`, exported to a
real OTLP/HTTP receiver on loopback (a ``http.server`` answering 200). Off, the same
calls are no-ops. Reported in microseconds per invocation: the recording and the flush
apart (the flush is one HTTP POST of the batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import REPO
from bench.stats import summarize

HEADING = "## OpenTelemetry export (issue 16): cold start and per-call cost"

PROBE = """
import json, sys, time
started = time.perf_counter()
import functions.handlers.api
imported = time.perf_counter()
import snapshot_restore_py
from stratus import snapstart
snapstart.run_hooks(snapshot_restore_py.get_before_snapshot())
done = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000, "init_ms": (done - started) * 1000,
                  "otel_loaded": any(m.split(".")[0] == "opentelemetry" for m in sys.modules)}))
"""


def _env(endpoint: str | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "STRATUS_AGENT": "triage",
        "OPENAI_API_KEY": "sk-bench",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",  # the import stays a plain import
    }
    if endpoint:
        env["STRATUS_OTLP_ENDPOINT"] = endpoint
    return env


def _cold_sample(endpoint: str | None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=_env(endpoint),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    sample: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return sample


@contextmanager
def receiver() -> Iterator[str]:
    """An OTLP/HTTP endpoint on 127.0.0.1 that accepts every export (its base URL)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _invocation() -> None:
    """The spans of one invocation with one tool call (2 model calls, 1 tool call)."""
    from stratus import otel

    for tokens in ((263, 21), (306, 75)):
        otel.model_call(
            model="gpt-5-mini",
            response_model="gpt-5-mini-2025-08-07",
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            cost_usd=0.0001,
            latency_ms=120.0,
            agent="order_status",
        )
    otel.tool_call(tool="lookup_order", agent="order_status", duration_ms=3.0, outcome="ok")


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1_000_000)  # microseconds
    return samples


def per_call(invocations: int) -> dict[str, Any]:
    """Microseconds per invocation: recording its spans, and the flush, on and off."""
    from stratus import otel

    saved = os.environ.get(otel.ENDPOINT_ENV)
    try:
        os.environ.pop(otel.ENDPOINT_ENV, None)
        otel.reset()
        off_record = _timed(_invocation, invocations)
        off_flush = _timed(otel.flush, invocations)
        with receiver() as url:
            os.environ[otel.ENDPOINT_ENV] = url
            otel.reset()
            _invocation()  # builds the provider (init's work, not a call's)
            otel.flush()
            on_record, on_flush = [], []
            for _ in range(invocations):
                on_record += _timed(_invocation, 1)
                on_flush += _timed(otel.flush, 1)
            otel.reset()
    finally:
        if saved is None:
            os.environ.pop(otel.ENDPOINT_ENV, None)
        else:
            os.environ[otel.ENDPOINT_ENV] = saved
        otel.reset()
    return {
        "invocations": invocations,
        "spans_per_invocation": 3,
        "off": {
            "record_us": summarize(off_record, keep_samples=False),
            "flush_us": summarize(off_flush, keep_samples=False),
        },
        "on": {
            "record_us": summarize(on_record, keep_samples=False),
            "flush_us": summarize(on_flush, keep_samples=False),
        },
    }


def measure(runs: int, invocations: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Cold start (``runs`` fresh interpreters each way) and per-call cost."""
    cold: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    _cold_sample(None)  # bytecode caches first (untimed)
    for i in range(runs):
        cold["off"].append(_cold_sample(None))
        # The endpoint need not answer: init builds the exporter, it sends nothing.
        cold["on"].append(_cold_sample("http://127.0.0.1:9"))
        log(f"  otel cold start sample {i + 1}/{runs}")
    figures: dict[str, Any] = {"runs": runs, "cold_start": {}}
    for mode, samples in cold.items():
        figures["cold_start"][mode] = {
            "import_ms": summarize([s["import_ms"] for s in samples], keep_samples=False),
            "init_ms": summarize([s["init_ms"] for s in samples], keep_samples=False),
            "otel_loaded": all(s["otel_loaded"] for s in samples),
        }
    figures["per_call"] = per_call(invocations)
    off, on = figures["cold_start"]["off"], figures["cold_start"]["on"]
    figures["init_added_ms"] = round(on["init_ms"]["median"] - off["init_ms"]["median"], 1)
    return figures


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def render(data: dict[str, Any]) -> list[str]:
    off, on = data["cold_start"]["off"], data["cold_start"]["on"]
    calls = data["per_call"]
    lines = [
        HEADING,
        "",
        f"Cold start: the agent function's import and init (`functions.handlers.api`, "
        f"triage, init hooks run) in {data['runs']} fresh interpreters each way; medians and "
        "p90 in ms. Off, `opentelemetry` is never imported "
        f"(loaded: {_yes(off['otel_loaded'])}); on, the SDK and the OTLP/HTTP exporter are "
        f"imported and built at init (loaded: {_yes(on['otel_loaded'])}).",
        "",
        "| OTLP export | import median | init median | init p90 |",
        "|---|---:|---:|---:|",
        f"| off | {off['import_ms']['median']:,.1f} | {off['init_ms']['median']:,.1f} "
        f"| {off['init_ms']['p90']:,.1f} |",
        f"| on | {on['import_ms']['median']:,.1f} | {on['init_ms']['median']:,.1f} "
        f"| {on['init_ms']['p90']:,.1f} |",
        "",
        f"Init added by export: **{data['init_added_ms']:,.1f} ms** (median against median).",
        "",
        f"Per invocation ({calls['invocations']} invocations, "
        f"{calls['spans_per_invocation']} spans each: two model calls and one tool call), in "
        "microseconds; the flush is the end-of-invocation export to an OTLP/HTTP receiver on "
        "loopback (a real backend adds its network round trip to the flush).",
        "",
        "| OTLP export | record median | record p90 | flush median | flush p90 |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in ("off", "on"):
        row = calls[mode]
        lines.append(
            f"| {mode} | {row['record_us']['median']:,.1f} | {row['record_us']['p90']:,.1f} "
            f"| {row['flush_us']['median']:,.1f} | {row['flush_us']['p90']:,.1f} |"
        )
    lines.append("")
    return lines


if __name__ == "__main__":
    print("\n".join(render(measure(runs=5, invocations=200))))

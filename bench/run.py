"""Entry point: ``python -m bench.run [--quick] [--out bench/report.md]``.

Writes the Markdown report and, beside it, its JSON twin (same name, ``.json``).
Progress goes to stderr. ``--runs`` and ``--invokes`` (not shown in ``--help``)
override the sample counts, for the smoke test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bench import (
    aws_calls,
    coldstart,
    critical_path,
    guardrails,
    invoke,
    memory,
    sessions,
    streaming,
)
from bench import load as load_bench
from bench import otel as otel_bench
from bench.invoke import captured_stdout
from bench.report import render

DEFAULT_OUT = Path(__file__).resolve().parent / "report.md"
FULL = {"runs": 15, "invokes": 200, "warmup": 20}
QUICK = {"runs": 5, "invokes": 50, "warmup": 5}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark handler cold starts and per-invoke overhead; write a report.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples (5 runs, 50 invokes): about 30-60 s"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="Markdown report path; the JSON twin goes beside it (default: bench/report.md)",
    )
    parser.add_argument("--runs", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--invokes", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("runs", "invokes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Powertools warns on stderr for every flush without metrics: noise, not a finding.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    preset = QUICK if args.quick else FULL
    runs = args.runs or preset["runs"]
    invokes = args.invokes or preset["invokes"]
    warmup = min(preset["warmup"], invokes)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "quick": args.quick,
        "runs": runs,
        "invokes": invokes,
        "command": shlex.join(["python", "-m", "bench.run", *(argv or sys.argv[1:])]),
    }
    log(f"cold start: {len(coldstart.TARGETS)} modules x {runs} fresh interpreters")
    cold = coldstart.measure(runs, log=log)
    # The in-process sections print Powertools EMF metric lines and logs on stdout, as a
    # function would to its log pipe: captured (and counted), never on the console.
    with captured_stdout() as stdout:
        log(f"invoke: {invokes} calls per case after {warmup} warm-up calls")
        inv = invoke.measure(invokes, warmup, log=log)
        log("sessions: per-turn reads, prompt and time at 10, 1,000 and 5,000 messages")
        sess = sessions.measure(turns=2 if args.quick else 5, log=log)
        log(f"aws calls: calls and capacity per request; gateway latency ({invokes} per case)")
        calls = aws_calls.measure(invokes, warmup, log=log)
        samples = max(3, invokes // 2)
        log(f"critical path: round trips and latency per request kind ({samples} per case)")
        critical = critical_path.measure(samples, 1 if args.quick else 3, log=log)
    # The local cloud's access lines ("POST /v1/... -> 200") go through the runtime's
    # logger, which the in-process sections left at INFO: console noise, not a finding.
    logging.getLogger("stratus.local").setLevel(logging.WARNING)
    log("streaming: time to first token and last frame, WebSocket against REST (local cloud)")
    streamed = streaming.measure(requests=5 if args.quick else 15, log=log)
    log("guardrails: rules-only screening per request, the classifier's model call")
    guarded = guardrails.measure(50 if args.quick else 400, log=log)
    log("memory: recall latency, cost and prompt tokens per turn at 1,000 and 10,000 memories")
    sizes = memory.QUICK if args.quick else memory.SIZES
    remembered = memory.measure(2 if args.quick else 10, sizes, log=log)
    log("otel: cold start and per-call cost of OTLP export, on against off")
    traced = otel_bench.measure(min(runs, 3), 50 if args.quick else 300, log=log)
    log("load: requests/s and latency of the local cloud under Locust (invoke, 10 and 50 users)")
    loaded = load_bench.measure(load_bench.QUICK if args.quick else load_bench.FULL, log=log)
    data: dict[str, Any] = {
        "meta": meta,
        "cold_start": cold,
        "invoke": inv,
        "sessions": sess,
        "aws_calls": calls,
        "critical_path": critical,
        "streaming": streamed,
        "guardrails": guarded,
        "memory": remembered,
        "otel": traced,
        "load": loaded,
        "process": {
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "elapsed_s": round(time.perf_counter() - started, 1),
            "stdout_bytes": stdout["bytes"],
        },
    }
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = [*streaming.render(streamed), *guardrails.render(guarded)]
    sections += memory.render(remembered)
    sections += otel_bench.render(traced)
    sections += load_bench.render(loaded)
    out.write_text(render(data) + "\n".join(sections), encoding="utf-8")
    soak = out.with_name("soak.json")
    if soak.exists():  # make soak's section is its own run: keep it in the new report
        from bench.soak_report import write_section

        write_section(out, json.loads(soak.read_text(encoding="utf-8")))
    twin = out.with_suffix(".json")
    twin.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out} and {twin} in {data['process']['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

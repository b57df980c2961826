"""The local cloud's capacity: ``stratus load --scenario invoke`` at 10 and 50 users.

One local cloud (``infra.local.cloud``: gateway, authorizer, the agent functions in
their worker pool, moto, the offline fake model), one Locust run per concurrency
level (``infra.load_cli.execute``, a fresh tenant each), each bounded in time and
requests. Locust runs on the same two cores as everything it measures, so the figures
are this machine's capacity with the load generator included: a floor for the code
path, not an AWS figure (a Lambda function instance serves one request at a time,
and API Gateway and DynamoDB are not on loopback).

``python -m bench.load [--quick]`` runs only this section and splices it into
``bench/report.md`` (and its JSON twin), as ``make bench`` would write it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADING = "## Load: requests per second of the local cloud (Locust, `invoke`, fake model)"


@dataclass(frozen=True)
class Preset:
    """The concurrency levels and each run's bounds."""

    levels: tuple[int, ...]
    duration_s: int
    max_requests: int
    #: A first, unreported run that starts the function workers (the local cloud runs at
    #: most 10 per function: ``infra.local.lambda_runtime.DEFAULT_CONCURRENCY``); 0: none.
    warm_users: int = 2
    warm_s: int = 2


FULL = Preset(levels=(10, 50), duration_s=20, max_requests=4000, warm_users=10, warm_s=10)
#: The bench smoke (``--quick``): a few seconds and a few users, the same code path.
QUICK = Preset(levels=(2,), duration_s=6, max_requests=50, warm_users=0)
INVOKE_ROW = "/v1/agents/{agent}/invoke"
#: The capacity measured is the cloud's, not the one fake model key's request rate
#: (500 requests per minute by default: 50 users pass it in seconds).
KEY_LIMITS = {"STRATUS_KEY_RPM": "10000000", "STRATUS_KEY_TPM": "10000000000"}
DEFAULT_OUT = Path(__file__).resolve().parent / "report.md"


def measure(preset: Preset = FULL, log: Callable[[str], None] = print) -> dict[str, Any]:
    from infra.load_cli import execute, local_target
    from infra.local.cloud import LocalCloud

    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    runs = []
    with (
        LocalCloud(
            api_port=0,
            aws_port=0,
            state_file=None,
            environ=environ,
            log_sink=lambda line: None,
            function_env=KEY_LIMITS,
        ) as cloud,
        tempfile.TemporaryDirectory(prefix="stratus-load-") as tmp,
    ):
        assert cloud.facts is not None
        target = local_target(cloud.facts.__dict__)
        if preset.warm_users:  # cold starts are not the capacity being measured
            execute(
                target,
                scenarios=("invoke",),
                users=preset.warm_users,
                spawn_rate=preset.warm_users,
                duration_s=preset.warm_s,
                max_requests=preset.max_requests,
                out=Path(tmp) / "warm",
            )
        for users in preset.levels:
            started = time.perf_counter()
            summary = execute(
                target,
                scenarios=("invoke",),
                users=users,
                spawn_rate=max(1.0, users / 2),  # ramp in about 2 s, then hold
                duration_s=preset.duration_s,
                max_requests=preset.max_requests,
                out=Path(tmp) / f"u{users}",
            )
            row = next((r for r in summary["requests"] if r["name"] == INVOKE_ROW), None)
            totals = summary["totals"]
            runs.append(
                {
                    "users": users,
                    "requests": totals["requests"],
                    "requests_per_s": totals["requests_per_s"],
                    "error_rate": totals["error_rate"],
                    "p50_ms": row["p50"] if row else None,
                    "p90_ms": row["p90"] if row else None,
                    "p99_ms": row["p99"] if row else None,
                    "errors": {e["code"]: e["count"] for e in summary["errors"]},
                    "stopped_by": summary["stopped_by"],
                    "cost_per_task_usd": (summary["cost"].get("invoke") or {}).get(
                        "cost_per_task_usd"
                    ),
                    "elapsed_s": round(time.perf_counter() - started, 1),
                }
            )
            log(
                f"  load: {users} users, {totals['requests']} requests, "
                f"{totals['requests_per_s']} requests/s, errors {totals['error_rate']:.2%}"
            )
    return {
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "duration_s": preset.duration_s,
        "max_requests": preset.max_requests,
        "cpu_count": os.cpu_count(),
        "runs": runs,
    }


def render(data: dict[str, Any]) -> list[str]:
    lines = [
        HEADING,
        "",
        (f"Measured {data['date']}: " if data.get("date") else "")
        + "`stratus load --scenario invoke` against one local cloud with the offline fake "
        f"model, one run per concurrency level, each bounded to {data['duration_s']} s "
        f"(ramp included) or {data['max_requests']:,} requests, a new tenant each, Locust "
        f"on the same {data['cpu_count']} cores as the cloud it loads. Users wait for "
        "nothing between requests, so the users are the concurrency. Latency in ms is the "
        "client's (Locust's), errors by the API's error code. The model key's request "
        "and token rate limits are raised for the run: the capacity is the cloud's, not "
        "one key's (500 requests per minute by default, `model_rate_limited` past it).",
        "",
        "| users | requests | requests/s | p50 | p90 | p99 | error rate | errors by code |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in data["runs"]:
        errors = ", ".join(f"`{code}` {n}" for code, n in sorted(run["errors"].items())) or "-"
        lines.append(
            f"| {run['users']} | {run['requests']:,} | {run['requests_per_s']:,.1f} | "
            f"{_ms(run['p50_ms'])} | {_ms(run['p90_ms'])} | {_ms(run['p99_ms'])} | "
            f"{run['error_rate'] * 100:.1f} % | {errors} |"
        )
    lines += [
        "",
        "Requests per second stop growing once both cores are busy: the gateway, the "
        "function workers, moto and Locust share them. The local cloud also runs at most "
        "10 workers per function, so past 10 users a request waits for a free worker (up "
        "to 30 s, then `throttled`, 429). More users then add queueing, which shows in "
        "p90 and p99, not throughput. On AWS each Lambda instance serves one request and "
        "the fleet scales out, so run `stratus load --stack` for a stage's own figures.",
        "",
    ]
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def write_section(out: Path, data: dict[str, Any]) -> None:
    """Replace only this section of ``out`` (appended if missing), and its JSON twin's key."""
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    section = "\n".join(render(data))
    start = text.find(HEADING + "\n")
    if start < 0:
        joiner = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        text = text + joiner + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        tail = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section + ("\n" + tail if tail else "")
    out.write_text(text, encoding="utf-8")
    twin = out.with_suffix(".json")
    if twin.exists():
        report = json.loads(twin.read_text(encoding="utf-8"))
        report["load"] = data
        twin.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 users for 6 s (the smoke)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    data = measure(QUICK if args.quick else FULL)
    write_section(args.out, data)
    print(f"wrote the load section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run Locust headless in a child process, bounded in users, time and requests.

A child process, not Locust's library API in this one: Locust monkeypatches the
process with gevent on import, which must not leak into the CLI (boto3 calls before
and after the run) or into a test session. The child gets the API key through its
environment, the run's bounds on its command line, and writes its CSV files, its HTML
report (with Locust's own charts) and the scenario summary into ``out``.

The run ramps to ``users`` at ``spawn_rate`` users per second, holds until
``duration_s`` is over (Locust's ``-t`` counts from the start, ramp included) or
``max_requests`` requests were made, and gets a few seconds to let running requests
finish; the child is killed if it outlives all of that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
SCENARIOS = ("invoke", "session", "jobs", "queue")
#: Seconds Locust lets running tasks finish after the stop (``--stop-timeout``).
STOP_TIMEOUT_S = 5
#: Seconds on top of the duration and stop timeout before the child is killed.
GRACE_S = 30
CSV_PREFIX = "locust"
HTML_NAME = "locust.html"
SUMMARY_NAME = "scenarios.json"
LOG_NAME = "locust.log"


@dataclass(frozen=True)
class LoadPlan:
    """What one run does and how far it may go."""

    host: str
    scenarios: tuple[str, ...]
    users: int
    spawn_rate: float
    duration_s: int
    max_requests: int = 0
    turns: int = 3
    tenant_id: str = ""
    queue_url: str = ""
    job_timeout_s: float = 60.0
    #: Extra environment of the child (the producer's AWS credentials, the endpoint).
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIOS)
        if not self.scenarios or unknown:
            raise ValueError(f"scenarios must be among {', '.join(SCENARIOS)}: {sorted(unknown)}")
        if self.users < 1 or self.spawn_rate <= 0 or self.duration_s < 1:
            raise ValueError("users >= 1, spawn rate > 0 and duration >= 1 s are required")
        if self.max_requests < 0 or self.turns < 1:
            raise ValueError("max requests >= 0 and turns >= 1 are required")
        if "queue" in self.scenarios and not (self.tenant_id and self.queue_url):
            raise ValueError("the queue scenario needs the tenant id and the ingest queue URL")


@dataclass(frozen=True)
class LoadRun:
    """Where a finished run left its files, and how it went."""

    out: Path
    returncode: int
    elapsed_s: float

    @property
    def stats_csv(self) -> Path:
        return self.out / f"{CSV_PREFIX}_stats.csv"

    @property
    def failures_csv(self) -> Path:
        return self.out / f"{CSV_PREFIX}_failures.csv"

    @property
    def html(self) -> Path:
        return self.out / HTML_NAME

    @property
    def summary(self) -> Path:
        return self.out / SUMMARY_NAME

    @property
    def log(self) -> Path:
        return self.out / LOG_NAME


def parse_duration(text: str) -> int:
    """``30s``, ``2m``, ``1h30m`` or plain seconds -> seconds (at least 1)."""
    text = text.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        seconds, number = 0, ""
        units = {"h": 3600, "m": 60, "s": 1}
        for char in text:
            if char.isdigit():
                number += char
            elif char in units and number:
                seconds += int(number) * units[char]
                number = ""
            else:
                raise ValueError(f"not a duration: {text!r} (use 30s, 2m, 1h30m)")
        if number:
            raise ValueError(f"not a duration: {text!r} (a number needs a unit: s, m, h)")
    if seconds < 1:
        raise ValueError("a duration must be at least 1 s")
    return seconds


def command(plan: LoadPlan, out: Path) -> list[str]:
    """The Locust command line of ``plan`` (the API key is not on it)."""
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        plan.host.rstrip("/"),
        "-u",
        str(plan.users),
        "-r",
        f"{plan.spawn_rate:g}",
        "-t",
        f"{plan.duration_s}s",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--csv",
        str(out / CSV_PREFIX),
        "--html",
        str(out / HTML_NAME),
        "--only-summary",
        "--exit-code-on-error",
        "0",  # failures are findings for the report, not a failed run
        "--loglevel",
        "WARNING",
        "--stratus-max-requests",
        str(plan.max_requests),
        "--stratus-turns",
        str(plan.turns),
        "--stratus-job-timeout",
        f"{plan.job_timeout_s:g}",
        "--stratus-summary-file",
        str(out / SUMMARY_NAME),
    ]
    if plan.tenant_id:
        argv += ["--stratus-tenant-id", plan.tenant_id]
    if plan.queue_url:
        argv += ["--stratus-queue-url", plan.queue_url]
    if set(plan.scenarios) != set(SCENARIOS):
        argv += ["--tags", *plan.scenarios]
    return argv


def run(plan: LoadPlan, api_key: str, out: Path) -> LoadRun:
    """Run Locust for ``plan`` and wait for it; raises if it could not run at all."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{CSV_PREFIX}_*.csv"):
        stale.unlink()
    env = {**os.environ, **plan.env, "STRATUS_LOAD_API_KEY": api_key}
    timeout = plan.duration_s + STOP_TIMEOUT_S + GRACE_S
    started = time.perf_counter()
    with (out / LOG_NAME).open("w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(  # noqa: S603 - our own interpreter and arguments
                command(plan, out),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Locust did not stop within {timeout} s; see {log.name}") from None
    result = LoadRun(out, proc.returncode, time.perf_counter() - started)
    if proc.returncode != 0 or not result.stats_csv.exists():
        tail = result.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"Locust failed (exit {proc.returncode}):\n{tail}")
    return result

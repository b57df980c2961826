"""The chaos soak: ``python -m bench.soak [--jobs N] [--kills K] [--out bench/report.md]``.

Starts its own local cloud (free ports, offline fake model, in this process) and
submits N jobs, half over HTTP, half as producer contract v1 messages from a
plain boto3 producer, while it SIGKILLs workers mid-step (before and right after
the model answered: :mod:`infra.local.chaos`), forces redeliveries (killed
batches come back after the visibility timeout; a share is submitted twice, same
Idempotency-Key / same message) and makes the fake model answer 429, 500 and
time out. It waits (bounded) until every job is final and the queues are quiet,
counts lost, stuck, failed by code, extra provider calls (inside and outside the
crash window), open reservations and steps billed twice from the tables, DLQs
and the fake model's log, prints the table, replaces only the ``## Chaos soak``
section of the report and writes ``soak.json`` beside it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import random
import signal
import sys
import threading
import time
import urllib.error
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.soak_figures import TERMINAL, compute_figures
from bench.soak_report import render_table, write_report
from infra.local.chaos import ModelChaos, inject_faults, worker_pids

DEFAULT_OUT = Path(__file__).resolve().parent / "report.md"


@dataclass(frozen=True)
class SoakParams:
    """One soak run's size and chaos; the defaults are the ``make soak`` run."""

    jobs: int = 1000
    kills: int = 20
    #: Faults injected of each kind (429, 500, timeout), spread over the submissions.
    faults_per_kind: int = 10
    #: Share of jobs for ``order_status`` (a tool call: two model steps); the rest triage.
    order_status_share: float = 0.1
    #: Share of jobs submitted twice (same Idempotency-Key / same producer message).
    duplicate_share: float = 0.1
    #: Share of producer messages without an idempotency key (job id from the message id).
    unkeyed_share: float = 0.2
    #: The job workers' timeout; the job queues' visibility timeout is 6x this. A batch of
    #: five jobs must fit in it with the machine loaded by the whole soak (2 cores): at 6 s
    #: a 1,000-job run mostly timed out and the model's breaker opened for the fleet.
    worker_timeout_s: int = 15
    http_threads: int = 4
    #: Backpressure: submission pauses while the ingest and job queues hold more messages
    #: (visible + in flight) than this. A 1,000-job burst on 2 cores otherwise queues so
    #: much work on moto that batches outlive their timeout: the soak measures what is
    #: lost under chaos, not how deep a backlog this machine can hold.
    max_backlog: int = 60
    #: Bound on the wait for every job to be final, and then for the queues to be quiet.
    wait_s: float = 900.0
    quiet_s: float = 60.0
    seed: int = 10


#: The soak's sweep schedule and reservation hold margin (seconds): the stack's 60 and 30
#: scaled down to its short worker timeout, so a run is minutes, not hours.
SWEEP_INTERVAL_S = 5.0
HOLD_MARGIN_S = 2


@dataclass
class Planned:
    index: int
    marker: str
    source: str  # "http" | "sqs"
    agent: str
    body: dict[str, Any]
    key: str | None
    duplicate: bool
    job_id: str | None = None
    submitted: bool = False
    message_ids: list[str] = field(default_factory=list)


def _input(agent: str, marker: str, rng: random.Random) -> str:
    order = f"A-100{rng.randint(1, 3)}"
    if agent == "order_status":
        return f"[soak:{marker}] Where is my order {order}? It has not arrived."
    texts = (
        f"I was billed twice for order {order}",
        f"Where is my order {order}?",
        f"I want to return order {order}, it is broken",
        "The app crashes when I log in",
    )
    return f"[soak:{marker}] {rng.choice(texts)}"


def plan_jobs(params: SoakParams, run: str) -> list[Planned]:
    rng = random.Random(params.seed)
    planned = []
    for index in range(params.jobs):
        source = "http" if index % 2 == 0 else "sqs"
        agent = "order_status" if rng.random() < params.order_status_share else "triage"
        marker = f"{run}-{index:05d}"
        body: dict[str, Any] = {
            "agent": agent,
            "input": _input(agent, marker, rng),
            "metadata": {"soak": run, "n": index},
        }
        keyed = source == "http" or rng.random() >= params.unkeyed_share
        duplicate = keyed and rng.random() < params.duplicate_share
        key = f"soak-{run}-{index:05d}" if keyed else None
        planned.append(Planned(index, marker, source, agent, body, key, duplicate))
    return planned


# -- the run --------------------------------------------------------------------------


class Soak:
    """One soak against one local cloud."""

    def __init__(self, params: SoakParams, cloud: Any) -> None:
        import boto3

        from stratus.jobs.contracts import job_id_for

        self.params = params
        self.cloud = cloud
        self.facts = cloud.facts
        self.job_id_for = job_id_for
        session = boto3.session.Session(
            aws_access_key_id="x", aws_secret_access_key="x", region_name=self.facts.region
        )
        self.sqs = session.client("sqs", endpoint_url=self.facts.aws_endpoint_url)
        self.ddb = session.client("dynamodb", endpoint_url=self.facts.aws_endpoint_url)
        self.run = uuid.uuid4().hex[:8]
        self.tenant = self.facts.demo_tenant_id
        self.jobs = plan_jobs(params, self.run)
        self.chaos = ModelChaos(cloud.fake_model, candidates=worker_pids)
        self.counts: Counter[str] = Counter()
        #: Markers of jobs whose worker invocation the runtime ended at its timeout: a
        #: crash the harness did not aim, which may fall in the ledger's crash window.
        self.timed_out: set[str] = set()
        self._markers: dict[str, str] = {}  # job id -> marker, filled at submission
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- chaos

    def aim_kills(self) -> None:
        """Kill on the first model request of K jobs spread over the run, alternating phases."""
        k = min(self.params.kills, len(self.jobs))
        if not k:
            return
        step = len(self.jobs) / k
        for n in range(k):
            job = self.jobs[int(n * step + step / 2)]
            self.chaos.aim(job.marker, "before_answer" if n % 2 == 0 else "after_answer")

    def fault_schedule(self) -> dict[int, str]:
        """Submission index -> fault kind to inject then."""
        kinds = ("429", "500", "timeout")
        total = self.params.faults_per_kind * len(kinds)
        if not total:
            return {}
        step = len(self.jobs) / total
        return {int(n * step + step / 3): kinds[n % len(kinds)] for n in range(total)}

    def inject(self, kind: str) -> None:
        # A timeout holds the call past the caller's per-call timeout (the worker's).
        inject_faults(
            self.cloud.fake_model,
            kind,  # type: ignore[arg-type]
            times=2 if kind != "timeout" else 1,
            timeout_s=self.params.worker_timeout_s + 1.0,
        )
        self.count(f"fault_{kind}")

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    # -- submission

    def _post(self, job: Planned) -> str | None:
        from infra.local.demo import http

        headers = {"Authorization": f"Bearer {self.facts.demo_tenant_key}"}
        assert job.key is not None
        headers["Idempotency-Key"] = job.key
        for attempt in range(8):
            try:
                reply = http("POST", f"{self.facts.api_url}/v1/jobs", job.body, headers, 30.0)
            except (OSError, urllib.error.URLError) as exc:
                self.count("http_transport_errors")
                self.count("http_resubmits")
                time.sleep(min(2.0, 0.1 * 2**attempt))
                self.errors.append(f"POST {job.marker}: {exc!r}"[:200])
                continue
            if reply.status == 202:
                job_id: str = reply.body["job_id"]
                return job_id
            self.count(f"http_{reply.status}")
            if reply.status in (429, 500, 502, 503, 504):
                self.count("http_resubmits")  # the same key again: never a second job
                time.sleep(min(2.0, 0.1 * 2**attempt))
                continue
            self.errors.append(f"POST {job.marker}: {reply.status} {reply.body}"[:300])
            return None
        return None

    def submit_http(self, job: Planned) -> None:
        job_id = self._post(job)
        if job_id is None:
            return
        job.job_id, job.submitted = job_id, True
        self._markers[job_id] = job.marker
        self.count("submitted_http")
        if job.duplicate:
            again = self._post(job)
            self.count("duplicates_http")
            if again != job_id:
                self.count("duplicate_mismatch")
                self.errors.append(f"duplicate POST {job.marker}: {again} != {job_id}")

    def submit_sqs(self, job: Planned) -> None:
        url = self.facts.queue_urls["ingest"]
        message = {"version": "1", "tenant_id": self.tenant, **job.body}
        if job.key:
            message["idempotency_key"] = job.key
        body = json.dumps(message)
        for copy in range(2 if job.duplicate else 1):
            sent = self.sqs.send_message(QueueUrl=url, MessageBody=body)
            job.message_ids.append(sent["MessageId"])
            if copy:
                self.count("duplicates_sqs")
        job.job_id = self.job_id_for(self.tenant, job.key or f"sqs:{job.message_ids[0]}")
        self._markers[job.job_id] = job.marker
        job.submitted = True
        self.count("submitted_sqs")

    def watch_timeouts(self) -> Any:
        """Wrap the runtime's invoke: note the jobs of every worker batch that timed out."""
        runtime = self.cloud.runtime
        original = runtime.invoke

        def invoke(name: str, event: Any, **kwargs: Any) -> Any:
            result = original(name, event, **kwargs)
            error = getattr(result, "error", None) or {}
            if "-worker-" in name and error.get("errorType") == "Sandbox.Timedout":
                for record in (event or {}).get("Records", []):
                    try:
                        job_id = json.loads(record.get("body") or "{}").get("job_id")
                    except ValueError:
                        continue
                    marker = self._markers.get(job_id)
                    if marker:
                        with self._lock:
                            self.timed_out.add(marker)
            return result

        runtime.invoke = invoke
        return lambda: setattr(runtime, "invoke", original)

    def backlog(self) -> int:
        """Messages on the ingest and job queues, visible or in flight."""
        return self.queue_depth()

    def submit_all(self) -> None:
        faults = self.fault_schedule()
        started = time.monotonic()
        paused = 0.0
        with concurrent.futures.ThreadPoolExecutor(self.params.http_threads) as pool:
            futures = []
            for job in self.jobs:
                if job.index in faults:
                    self.inject(faults[job.index])
                if job.source == "http":
                    futures.append(pool.submit(self.submit_http, job))
                else:
                    self.submit_sqs(job)
                # Keep the HTTP side in step with the producer (both halves interleave).
                while sum(not f.done() for f in futures) > 4 * self.params.http_threads:
                    time.sleep(0.01)
                if job.index % 10 == 9:
                    paused += self._hold_back()
            for future in futures:
                future.result()
        self.timings["submit_s"] = time.monotonic() - started
        self.timings["submit_paused_s"] = paused

    def _hold_back(self) -> float:
        """Wait (bounded) while the queues hold more than ``max_backlog`` messages."""
        waited = 0.0
        while waited < self.params.wait_s and self.backlog() > self.params.max_backlog:
            time.sleep(0.5)
            waited += 0.5
        return waited

    # -- waiting

    def scan(self, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        deserialize = TypeDeserializer().deserialize
        paginator = self.ddb.get_paginator("scan")
        for page in paginator.paginate(TableName=self.facts.tables[table], **kwargs):
            for item in page["Items"]:
                yield {k: deserialize(v) for k, v in item.items()}

    def job_items(self) -> dict[str, dict[str, Any]]:
        return {
            item["job_id"]: item
            for item in self.scan(
                "jobs",
                FilterExpression="sk = :job",
                ExpressionAttributeValues={":job": {"S": "JOB"}},
            )
        }

    def wait_final(self) -> dict[str, dict[str, Any]]:
        started = time.monotonic()
        expected = {j.job_id for j in self.jobs if j.job_id}
        items: dict[str, dict[str, Any]] = {}
        while time.monotonic() - started < self.params.wait_s:
            items = self.job_items()
            if all(items.get(j, {}).get("status") in TERMINAL for j in expected):
                break
            time.sleep(5.0)  # each look scans the jobs table: not too often
        self.timings["wait_final_s"] = time.monotonic() - started
        return items

    def queue_depth(self) -> int:
        total = 0
        for name, url in self.facts.queue_urls.items():
            if name.endswith("-dlq") or not (name == "ingest" or name.startswith("agent-")):
                continue
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            total += sum(int(v) for v in attrs.values())
        return total

    def wait_quiet(self) -> bool:
        """Until no message is left on the job and ingest queues (redeliveries acknowledged)."""
        started = time.monotonic()
        quiet = False
        # A killed batch's messages come back after the visibility timeout (6x the worker's).
        bound = max(self.params.quiet_s, 6 * self.params.worker_timeout_s + 15)
        while time.monotonic() - started < bound:
            if self.queue_depth() == 0:
                quiet = True
                break
            time.sleep(1.0)
        self.timings["wait_quiet_s"] = time.monotonic() - started
        return quiet

    # -- the figures

    def dlq_messages(self, name: str) -> list[dict[str, Any]]:
        url = self.facts.queue_urls.get(name)
        if not url:
            return []
        found: dict[str, dict[str, Any]] = {}
        for _ in range(50):
            got = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                VisibilityTimeout=60,
            ).get("Messages", [])
            if not got:
                break
            for message in got:
                found[message["MessageId"]] = dict(message)
        return list(found.values())

    def figures(self, items: dict[str, dict[str, Any]], quiet: bool) -> dict[str, Any]:
        return compute_figures(self, items, quiet)

    def final_sweep(self) -> None:
        """Once every hold a killed worker left has expired, one more sweep (the schedule
        would run it within its interval): what is open after it leaked."""
        time.sleep(self.params.worker_timeout_s + HOLD_MARGIN_S + 1)
        self.timings["final_sweep"] = 1.0
        self.cloud.sweep()

    def execute(self) -> dict[str, Any]:
        self.chaos.install()
        unwatch = self.watch_timeouts()
        try:
            self.aim_kills()
            self.submit_all()
            items = self.wait_final()
            quiet = self.wait_quiet()
        finally:
            unwatch()
            self.chaos.uninstall()
        self.final_sweep()
        items = self.job_items()
        return self.figures(items, quiet)


def _log_sink() -> Any:
    """The functions' logs go to ``$STRATUS_SOAK_LOG`` if set (a file), else nowhere."""
    import os

    path = os.environ.get("STRATUS_SOAK_LOG")
    if not path:
        return lambda line: None
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def sink(line: str) -> None:
        handle.write(line + "\n")
        handle.flush()

    return sink


def start_cloud(params: SoakParams) -> Any:
    import os

    from infra.config import load_stage
    from infra.local.cloud import LocalCloud

    stage = load_stage("dev").model_copy(update={"job_worker_timeout_s": params.worker_timeout_s})
    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return LocalCloud(
        stage=stage,
        api_port=0,
        aws_port=0,
        state_file=None,
        log_sink=_log_sink(),
        environ=environ,
        # The schedule and its grace periods scaled to the soak's short worker timeout.
        sweep_interval_s=SWEEP_INTERVAL_S,
        function_env={
            "STRATUS_JOB_SWEEP_GRACE_S": "2",
            "STRATUS_JOB_SWEEP_HOLD_S": "20",
            "STRATUS_BUDGET_HOLD_MARGIN_S": str(HOLD_MARGIN_S),
        },
    ).start()


def run_soak(params: SoakParams) -> dict[str, Any]:
    """Start a local cloud, run the soak, stop the cloud; the figures (JSON-ready)."""
    started = time.monotonic()
    cloud = start_cloud(params)
    try:
        soak = Soak(params, cloud)
        result = soak.execute()
    finally:
        cloud.stop()
    result["timings"]["total_s"] = round(time.monotonic() - started, 1)
    result["params"] = asdict(params)
    result["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=SoakParams.jobs)
    parser.add_argument("--kills", type=int, default=SoakParams.kills)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=SoakParams.seed)
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.kills < 0:
        parser.error("--jobs must be at least 2 and --kills at least 0")
    params = SoakParams(
        jobs=args.jobs,
        kills=args.kills,
        faults_per_kind=max(1, args.jobs // 100),
        seed=args.seed,
    )

    # Ctrl-C (and SIGTERM) stop the cloud through run_soak's finally.
    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        result = run_soak(params)
    except KeyboardInterrupt:
        print("soak interrupted; the local cloud was stopped", file=sys.stderr)
        return 130
    print(render_table(result))
    write_report(args.out, result)
    print(f"wrote the '## Chaos soak' section of {args.out} and {args.out.with_name('soak.json')}")
    return 0 if result["zeros_hold"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

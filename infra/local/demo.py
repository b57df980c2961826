"""``stratus demo``: the local cloud, driven as a client would, step by step.

It starts the local cloud on free ports, calls every execution model that
exists through its public interface (HTTP, and SQS for producers), walks a
session, prints each result and a table of tokens and cost per agent, stops
everything, and returns non-zero if any step did not behave as documented.

Its output is the walk-through only. The logs of the local cloud (the Lambda
runtime's per-invocation lines, moto's, the gateway's) go to a log file whose
path it prints at the start and the end; ``verbose=True`` streams them to the
console instead.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from infra.local import demo_canary, demo_stream
from infra.local.cloud import LocalCloud, LocalFacts
from infra.paths import REPO_ROOT

#: Where the local cloud's logs go while the demo runs (unless verbose).
DEFAULT_LOG_FILE = REPO_ROOT / ".stratus" / "demo.log"
#: Where a running local cloud (``stratus dev``) says where it is.
DEFAULT_STATE_FILE = REPO_ROOT / ".stratus" / "local.json"


@dataclass
class HttpReply:
    status: int
    body: Any
    headers: dict[str, str]


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> HttpReply:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - loopback http URLs of the local cloud
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw, status, hdrs = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw, status, hdrs = error.read(), error.code, dict(error.headers)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return HttpReply(status, parsed, hdrs)


class Demo:
    def __init__(self, facts: LocalFacts, out: TextIO, *, keep_session: bool = False) -> None:
        self.facts = facts
        self.out = out
        #: Leave the support session in place (a running ``stratus dev`` keeps it).
        self.keep_session = keep_session
        self.failures: list[str] = []
        self.spend: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._auth = {"Authorization": f"Bearer {facts.demo_tenant_key}"}

    def step(self, title: str, check: Callable[[], str]) -> None:
        try:
            detail = check()
        except AssertionError as exc:
            self.failures.append(title)
            print(f"  FAIL  {title}: {exc}", file=self.out, flush=True)
        else:
            print(f"  ok    {title}: {detail}", file=self.out, flush=True)

    def invoke(self, agent: str, payload: Any, headers: dict[str, str] | None = None) -> HttpReply:
        return http(
            "POST",
            f"{self.facts.api_url}/v1/agents/{agent}/invoke",
            payload,
            {**self._auth, **(headers or {})},
        )

    def record(self, reply: HttpReply) -> None:
        body = reply.body
        usage = body["usage"]
        row = self.spend[body["agent"]["name"]]
        row["calls"] += 1
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens"):
            row[name] += usage[name]
        row["cost_usd"] += body["cost_usd"]

    # -- the steps ----------------------------------------------------------------------

    def health(self) -> str:
        reply = http("GET", f"{self.facts.api_url}/v1/health")
        assert reply.status == 200, f"HTTP {reply.status}: {reply.body}"
        return f"status {reply.body['status']}"

    def triage(self) -> str:
        reply = self.invoke("triage", {"input": "Hi, where is my order A-1001? It is late."})
        assert reply.status == 200, f"HTTP {reply.status}: {reply.body}"
        self.record(reply)
        output = reply.body["output"]
        assert output["category"] in {
            "order_status",
            "return_request",
            "billing",
            "tech_support",
            "other",
        }, output
        return f"category={output['category']} cost=${reply.body['cost_usd']:.6f}"

    def order_status(self) -> str:
        reply = self.invoke("order_status", {"input": "Where is my order A-1001?"})
        assert reply.status == 200, f"HTTP {reply.status}: {reply.body}"
        self.record(reply)
        return str(reply.body["output"])[:100]

    def returns(self) -> str:
        reply = self.invoke(
            "returns", {"input": {"item": "rain jacket", "days": 12, "unused": True}}
        )
        assert reply.status == 200, f"HTTP {reply.status}: {reply.body}"
        self.record(reply)
        return f"eligible={reply.body['output']['eligible']} model={reply.body['model']}"

    def idempotent_replay(self) -> str:
        key = {"Idempotency-Key": f"demo-{uuid.uuid4()}"}
        payload = {"input": "I was billed twice for order A-1002"}
        first = self.invoke("triage", payload, key)
        second = self.invoke("triage", payload, key)
        assert first.status == second.status == 200, (first.status, second.status)
        assert first.body == second.body, "the replay differs from the first response"
        self.record(first)
        reused = self.invoke("triage", {"input": "something else"}, key)
        assert reused.status == 409, reused.body
        assert reused.body["error"]["code"] == "idempotency_key_reused", reused.body
        return "replayed the stored response; a different body got 409"

    def errors(self) -> str:
        no_key = http("POST", f"{self.facts.api_url}/v1/agents/triage/invoke", {"input": "x"})
        assert no_key.status == 401, no_key.body
        unknown = self.invoke("nope", {"input": "x"})
        assert unknown.status == 404 and unknown.body["error"]["code"] == "agent_not_found", (
            unknown.body
        )
        invalid = self.invoke("triage", {"text": "x"})
        assert invalid.status in (400, 422), invalid.body
        return "401 unauthorized, 404 agent_not_found, 422 validation_error"

    # -- sessions ---------------------------------------------------------------------

    def record_turn(self, agent: str, turn: dict[str, Any]) -> None:
        row = self.spend[f"session:{agent}"]
        row["calls"] += 1
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens"):
            row[name] += turn["usage"][name]
        row["cost_usd"] += turn["cost_usd"]

    def session(self) -> str:
        base = f"{self.facts.api_url}/v1/agents/support/sessions"
        created = http("POST", base, {"metadata": {"channel": "demo"}}, self._auth)
        assert created.status == 201, f"HTTP {created.status}: {created.body}"
        session_id = created.body["session_id"]
        url = f"{base}/{session_id}"
        messages = ("Hi, where is my order A-1001?", "And which carrier has it?")
        for turn, text in enumerate(messages, 1):
            reply = http("POST", f"{url}/messages", {"message": text}, self._auth)
            assert reply.status == 200, f"turn {turn}: HTTP {reply.status}: {reply.body}"
            assert reply.body["turn"] == turn, reply.body
            self.record_turn("support", reply.body)
        history = http("GET", url, None, self._auth)
        assert history.status == 200, f"HTTP {history.status}: {history.body}"
        roles = [m["role"] for m in history.body["messages"]]
        assert roles == ["user", "assistant"] * 2, roles
        cost = history.body["cost_usd"]
        if self.keep_session:
            return (
                f"{session_id}: 2 turns, history {len(roles)} messages, cost=${cost:.6f}; "
                "kept on the running cloud (stratus eval capture --agent support)"
            )
        deleted = http("DELETE", url, None, self._auth)
        assert deleted.status == 204, f"HTTP {deleted.status}: {deleted.body}"
        gone = http("GET", url, None, self._auth)
        assert gone.status == 404, f"HTTP {gone.status} after delete: {gone.body}"
        return (
            f"{session_id}: 2 turns, history {len(roles)} messages, "
            f"cost=${cost:.6f}; deleted (then 404)"
        )

    # -- asynchronous jobs --------------------------------------------------------------

    def _wait_job(self, job_id: str, until: set[str], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            reply = http("GET", f"{self.facts.api_url}/v1/jobs/{job_id}", None, self._auth)
            if reply.status == 200 and reply.body["status"] in until:
                return reply.body
            assert time.monotonic() < deadline, f"job {job_id} not {until} in {timeout} s"
            time.sleep(0.25)

    def record_job(self, job: dict[str, Any]) -> None:
        row = self.spend[f"job:{job['agent']}"]
        row["calls"] += len(job.get("steps") or []) or 1
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens"):
            row[name] += job["usage"][name]
        row["cost_usd"] += job["cost_usd"]

    def http_job(self) -> str:
        reply = http(
            "POST",
            f"{self.facts.api_url}/v1/jobs",
            {"agent": "triage", "input": "Where is my order A-1001?", "route": True},
            {**self._auth, "Idempotency-Key": f"demo-job-{uuid.uuid4()}"},
        )
        assert reply.status == 202, f"HTTP {reply.status}: {reply.body}"
        job = self._wait_job(reply.body["job_id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        self.record_job(job)
        routed = job.get("routed_to") or {}
        child = self._wait_job(routed["job_id"], {"succeeded", "failed"}) if routed else None
        if child:
            self.record_job(child)
        return (
            f"{job['job_id']} succeeded category={job['result']['category']} "
            f"cost=${job['cost_usd']:.6f}; routed to {routed.get('agent')}: "
            f"{child['status'] if child else '-'}"
        )

    def sqs_job(self) -> str:
        import boto3

        from stratus.jobs import job_id_for

        sqs = boto3.client(
            "sqs",
            endpoint_url=self.facts.aws_endpoint_url,
            region_name=self.facts.region,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",  # noqa: S106 - the local endpoint takes any key
        )
        key = f"demo-{uuid.uuid4()}"
        message = {
            "version": "1",
            "tenant_id": self.facts.demo_tenant_id,
            "agent": "returns",
            "input": {"item": "rain jacket", "order": "A-1002", "days": 12, "unused": True},
            "idempotency_key": key,
        }
        sqs.send_message(QueueUrl=self.facts.queue_urls["ingest"], MessageBody=json.dumps(message))
        sqs.send_message(QueueUrl=self.facts.queue_urls["ingest"], MessageBody="not json")
        job_id = job_id_for(self.facts.demo_tenant_id, key)
        deadline = time.monotonic() + 30
        while http("GET", f"{self.facts.api_url}/v1/jobs/{job_id}", None, self._auth).status != 200:
            assert time.monotonic() < deadline, "the producer's message never became a job"
            time.sleep(0.25)
        job = self._wait_job(job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        self.record_job(job)
        return (
            f"{job_id} succeeded eligible={job['result']['eligible']} "
            f"cost=${job['cost_usd']:.6f}; the poison message went to the ingest DLQ"
        )

    def workflow_job(self) -> str:
        reply = http(
            "POST",
            f"{self.facts.api_url}/v1/jobs",
            {"agent": "researcher", "input": "Which carrier is fastest?", "require_approval": True},
            self._auth,
        )
        assert reply.status == 202, f"HTTP {reply.status}: {reply.body}"
        job_id = reply.body["job_id"]
        waiting = self._wait_job(job_id, {"waiting_approval", "failed"})
        assert waiting["status"] == "waiting_approval", waiting
        steps = [s["name"] for s in waiting["steps"]]
        answer = http(
            "POST",
            f"{self.facts.api_url}/v1/jobs/{job_id}/approval",
            {"approved": True, "comment": "demo"},
            self._auth,
        )
        assert answer.status == 200, answer.body
        job = self._wait_job(job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        self.record_job(job)
        return f"steps {', '.join(steps)}; approved; cost=${job['cost_usd']:.6f}"

    def run(self) -> int:
        print(
            f"\nStratus demo against {self.facts.api_url}"
            f"{' (offline fake model)' if self.facts.fake_model else ''}\n",
            file=self.out,
        )
        self.step("health", self.health)
        self.step("sync: triage classifies a message", self.triage)
        self.step("sync: order_status looks the order up with a tool", self.order_status)
        self.step("sync: returns reasons over the policy (smart tier)", self.returns)
        self.step("sync: Idempotency-Key replays without paying again", self.idempotent_replay)
        self.step("errors: documented codes", self.errors)
        self.step(
            "session: support remembers two turns, read back, "
            + ("kept" if self.keep_session else "deleted"),
            self.session,
        )
        self.step(
            "stream: a support session turn over the WebSocket API, token by token",
            lambda: demo_stream.session_turn(self.facts),
        )
        self.step("job over HTTP: triage, routed to its specialist", self.http_job)
        self.step("job from a plain boto3 producer (SQS contract v1)", self.sqs_job)
        self.step(
            "workflow: researcher plans, researches, reviews, waits, approved", self.workflow_job
        )
        self.step(
            "canary: triage tier=smart costs too much per task, rolled back",
            lambda: demo_canary.rolled_back(self.facts),
        )
        self.step(
            "canary: triage prompt_version=v2 passes the gate, promoted",
            lambda: demo_canary.promoted(self.facts),
        )
        self.print_spend()
        if self.failures:
            print(
                f"\n{len(self.failures)} step(s) failed: {', '.join(self.failures)}", file=self.out
            )
            return 1
        print("\nAll demo steps passed.", file=self.out)
        return 0

    def print_spend(self) -> None:
        header = (
            f"\n{'agent':<18}{'calls':>6}{'input':>9}{'cached':>9}{'output':>9}"
            f"{'reasoning':>11}{'cost USD':>12}"
        )
        print(header, file=self.out)
        total = 0.0
        for agent, row in sorted(self.spend.items()):
            total += row["cost_usd"]
            print(
                f"{agent:<18}{int(row['calls']):>6}{int(row['input_tokens']):>9}"
                f"{int(row['cached_input_tokens']):>9}{int(row['output_tokens']):>9}"
                f"{int(row['reasoning_tokens']):>11}{row['cost_usd']:>12.6f}",
                file=self.out,
            )
        print(f"{'total':<18}{'':>44}{total:>12.6f}", file=self.out)


class _LogFile:
    """A log file shared by the runtime's log sink and the ``logging`` handlers."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("w", encoding="utf-8")
        self._lock = threading.Lock()

    def write_line(self, line: str) -> None:
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


class _LineHandler(logging.Handler):
    def __init__(self, log_file: _LogFile) -> None:
        super().__init__(logging.INFO)
        self.log_file = log_file
        self.setFormatter(logging.Formatter("[%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log_file.write_line(self.format(record))
        except Exception:  # a log line must never break the demo
            self.handleError(record)


@contextlib.contextmanager
def _logs_to(log_file: _LogFile) -> Iterator[None]:
    """Send every ``logging`` record of this process to ``log_file`` only, then restore."""
    # Powertools gives the "stratus" logger its own console handler (and no
    # propagation) once stratus.observability is imported: configure it first,
    # then route it to the file like everything else.
    importlib.import_module("stratus.observability")
    root, stratus = logging.getLogger(), logging.getLogger("stratus")
    saved = (root.level, list(root.handlers), list(stratus.handlers), stratus.propagate)
    root.handlers = [_LineHandler(log_file)]
    root.setLevel(logging.INFO)
    stratus.handlers = []
    stratus.propagate = True
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers = saved[1]
        stratus.handlers = saved[2]
        stratus.propagate = saved[3]


def running_cloud(state_file: Path = DEFAULT_STATE_FILE) -> LocalFacts | None:
    """The facts of a local cloud that is running now (``stratus dev``), else None.

    Running means its state file exists and its API answers ``GET /v1/health``; a
    state file left behind by a killed cloud is ignored.
    """
    try:
        raw = json.loads(state_file.read_text(encoding="utf-8"))
        facts = LocalFacts(**raw)
    except (OSError, ValueError, TypeError):
        return None
    try:
        reply = http("GET", f"{facts.api_url}/v1/health", timeout=2.0)
    except (OSError, ValueError):
        return None
    return facts if reply.status == 200 else None


def run_demo(
    out: TextIO = sys.stdout,
    *,
    verbose: bool = False,
    log_file: Path = DEFAULT_LOG_FILE,
    fresh: bool = False,
    state_file: Path = DEFAULT_STATE_FILE,
) -> int:
    """Run the walk-through; the local cloud's logs go to ``log_file`` unless ``verbose``.

    If a local cloud is already running (``stratus dev``) and ``fresh`` is false, the
    walk-through drives that one, so what it did stays there (``stratus eval capture``,
    ``stratus review``); otherwise it starts its own on free ports and stops it after.
    Returns 0 if every step behaved as documented, 1 otherwise.
    """
    running = None if fresh else running_cloud(state_file)
    if running is not None:
        print(
            f"Driving the local cloud already running at {running.api_url} (stratus dev); "
            "its logs are in that terminal, and what this walk-through does stays there.",
            file=out,
            flush=True,
        )
        return Demo(running, out, keep_session=True).run()
    if verbose:
        logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s", stream=sys.stderr)
        with LocalCloud(api_port=0, aws_port=0, state_file=None) as cloud:
            assert cloud.facts is not None
            return Demo(cloud.facts, out).run()

    logs = _LogFile(log_file)
    print(f"Function, gateway and moto logs: {logs.path} (--verbose shows them here)", file=out)
    try:
        with (
            _logs_to(logs),
            LocalCloud(api_port=0, aws_port=0, state_file=None, log_sink=logs.write_line) as cloud,
        ):
            assert cloud.facts is not None
            code = Demo(cloud.facts, out).run()
    finally:
        logs.close()
    print(f"Logs of this run: {logs.path}", file=out, flush=True)
    return code

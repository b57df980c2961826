"""The load scenarios, as Locust runs them (``locust -f infra/load/locustfile.py``).

One user class, four tagged tasks; ``--tags`` picks the scenarios (no tag: all four,
weighted like a mixed workload):

- ``invoke``: ``POST /v1/agents/triage/invoke``, the synchronous path.
- ``session``: create a ``support`` session, ``--stratus-turns`` messages, delete it.
- ``jobs``: ``POST /v1/jobs``, then ``GET /v1/jobs/{id}`` until the job is final.
- ``queue``: the producer contract, a plain boto3 ``SendMessage`` on the ingest queue,
  then ``GET /v1/jobs/{id}`` (the id the contract derives from the idempotency key)
  until the job is final.

Every failed request is reported by the API's stable error code (the
``{"error": {"code": ...}}`` body) so that the report counts errors by code, not by
free text. A whole task (a conversation, a job from submission to its end) is
reported too, as request type ``TASK``: its time is what a client waits for the
outcome, which is the latency that matters for the asynchronous paths.

Users wait for nothing between tasks (closed loop): ``-u`` is the concurrency. The
run stops at ``-t`` or after ``--stratus-max-requests`` requests, whichever is first,
and writes the tasks' count and cost (from the responses' ``cost_usd``) to
``--stratus-summary-file``. The API key comes from ``STRATUS_LOAD_API_KEY`` (never a
command-line argument: those are visible to every user of the machine).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from typing import Any

import gevent
from locust import FastHttpUser, constant, events, tag, task
from locust.env import Environment

#: A job's (or queued message's) end states.
FINAL = frozenset({"succeeded", "failed", "cancelled"})
POLL_S = 0.5
TRIAGE_INPUTS = (
    "Hi, where is my order {order}? It is late.",
    "I was billed twice for order {order}.",
    "The app crashes when I open order {order}.",
    "Can I return the jacket from order {order}?",
)
SESSION_TURNS = (
    "Where is my order {order}?",
    "And when will it arrive?",
    "Can you send it to my office instead?",
    "Thanks, that is all.",
)


class ApiError(Exception):
    """A failed request or task, named by its error code (the report groups by it)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code} ({detail})")
        self.code = code


class Tally:
    """Finished tasks and their cost per scenario, for the report's cost per task."""

    def __init__(self) -> None:
        self.scenarios: dict[str, dict[str, float]] = {}
        self.requests = 0
        self.stopped_by = "duration"

    def add(self, scenario: str, *, ok: bool, cost_usd: float = 0.0) -> None:
        row = self.scenarios.setdefault(scenario, {"tasks": 0, "failed": 0, "cost_usd": 0.0})
        row["tasks" if ok else "failed"] += 1
        row["cost_usd"] += cost_usd

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "stopped_by": self.stopped_by,
            "scenarios": self.scenarios,
        }


TALLY = Tally()
#: Users started so far (which scenario a user begins with).
_STARTED = itertools.count()
#: The run's Locust environment, once ``init`` has fired (the request bound reads it).
_ENVIRONMENT: list[Environment] = []


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--stratus-max-requests", type=int, default=0, help="0 = no bound")
    parser.add_argument("--stratus-turns", type=int, default=3, help="messages per session")
    parser.add_argument("--stratus-tenant-id", default="", help="the key's tenant (queue)")
    parser.add_argument("--stratus-queue-url", default="", help="the ingest queue (queue)")
    parser.add_argument("--stratus-job-timeout", type=float, default=60.0)
    parser.add_argument("--stratus-summary-file", default="")


@events.request.add_listener
def _count(request_type: str = "", **_: Any) -> None:
    """Stop the whole run once it has made ``--stratus-max-requests`` requests.

    HTTP and SQS requests count, a whole task (``TASK``) does not: the bound is on
    what the target serves, the same count as the report's requests."""
    if request_type == "TASK":
        return
    TALLY.requests += 1
    environment = _ENVIRONMENT[0] if _ENVIRONMENT else None
    if environment is None or environment.parsed_options is None:
        return
    bound = environment.parsed_options.stratus_max_requests
    if bound and TALLY.requests >= bound and TALLY.stopped_by != "max_requests":
        TALLY.stopped_by = "max_requests"
        runner = environment.runner
        if runner is not None:
            # Not from inside a user's greenlet: quitting kills the users, this one too.
            gevent.spawn_later(0, runner.quit)


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    _ENVIRONMENT.append(environment)


@events.test_stop.add_listener
def _write_summary(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    path = options.stratus_summary_file if options is not None else ""
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(TALLY.as_json(), out, indent=2)


def _code(response: Any) -> str:
    """The API's error code of a failed response (``connection_error`` when none came)."""
    if not response.status_code:
        return "connection_error"
    try:
        error = json.loads(response.text or "null")["error"]
        return str(error["code"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


def _order() -> str:
    return f"A-{random.randint(1000, 9999)}"  # noqa: S311 - varied inputs, not secrets


class StratusUser(FastHttpUser):
    """One API client: a key, no think time, the scenarios as weighted tasks."""

    wait_time = constant(0)

    def on_start(self) -> None:
        key = os.environ.get("STRATUS_LOAD_API_KEY", "")
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.options = self.environment.parsed_options
        # The n-th user starts with the n-th scenario, then picks by weight: even a run of
        # a few users and seconds exercises every scenario it was given.
        scenarios = list(dict.fromkeys(t for t in self.tasks if callable(t)))
        if scenarios:
            scenarios[next(_STARTED) % len(scenarios)](self)

    # -- one request --------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        name: str,
        body: Any = None,
        *,
        ok: tuple[int, ...] = (200,),
        waiting: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        """(status, parsed body); a status outside ``ok`` and ``waiting`` is a failure.

        ``waiting`` statuses (a queued message's job is ``404`` until the ingest
        function has made it) count as successful requests, not errors.
        """
        with self.client.request(
            method,
            path,
            name=name,
            headers=self.headers,
            data=None if body is None else json.dumps(body),
            catch_response=True,
        ) as response:
            status = response.status_code or 0
            if status in ok or status in waiting:
                response.success()
                try:
                    return status, json.loads(response.text) if response.text else None
                except ValueError:
                    return status, None
            response.failure(ApiError(_code(response), f"HTTP {status}"))
            return status, None

    def _task(self, name: str, started: float, error: ApiError | None) -> None:
        self.environment.events.request.fire(
            request_type="TASK",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )

    def _until_final(self, job_id: str, *, queued: bool) -> dict[str, Any] | None:
        """Poll the job until it is final (None: gone wrong or out of time)."""
        deadline = time.monotonic() + self.options.stratus_job_timeout
        while time.monotonic() < deadline:
            status, job = self._call(
                "GET",
                f"/v1/jobs/{job_id}",
                "/v1/jobs/{job_id}",
                waiting=(404,) if queued else (),
            )
            if status == 200 and isinstance(job, dict) and job.get("status") in FINAL:
                return job
            if status not in (200, 404):
                return None
            gevent.sleep(POLL_S)
        return {"status": "timeout"}

    def _finish_job(self, scenario: str, started: float, job: dict[str, Any] | None) -> None:
        if job is None:
            self._task(f"{scenario}.complete", started, ApiError("poll_failed", "job"))
            TALLY.add(scenario, ok=False)
            return
        if job["status"] == "succeeded":
            self._task(f"{scenario}.complete", started, None)
            TALLY.add(scenario, ok=True, cost_usd=float(job.get("cost_usd") or 0.0))
            return
        error = job.get("error")
        code = "job_timeout" if job["status"] == "timeout" else f"job_{job['status']}"
        if isinstance(error, dict) and error.get("code"):
            code = str(error["code"])
        self._task(f"{scenario}.complete", started, ApiError(code, f"job {job['status']}"))
        TALLY.add(scenario, ok=False, cost_usd=float(job.get("cost_usd") or 0.0))

    # -- the scenarios ------------------------------------------------------------------

    @tag("invoke")
    @task(4)
    def invoke(self) -> None:
        text = random.choice(TRIAGE_INPUTS).format(order=_order())  # noqa: S311
        status, body = self._call(
            "POST", "/v1/agents/triage/invoke", "/v1/agents/{agent}/invoke", {"input": text}
        )
        ok = status == 200 and isinstance(body, dict)
        TALLY.add("invoke", ok=ok, cost_usd=float(body.get("cost_usd") or 0.0) if ok else 0.0)

    @tag("session")
    @task(1)
    def session(self) -> None:
        started = time.perf_counter()
        base = "/v1/agents/support/sessions"
        status, head = self._call(
            "POST",
            base,
            "/v1/agents/{agent}/sessions",
            {"metadata": {"source": "load"}},
            ok=(201,),
        )
        if status != 201 or not isinstance(head, dict):
            self._task("session.conversation", started, ApiError("session_not_created", "head"))
            TALLY.add("session", ok=False)
            return
        path = f"{base}/{head['session_id']}"
        cost = 0.0
        failed: ApiError | None = None
        for turn in range(max(1, self.options.stratus_turns)):
            text = SESSION_TURNS[turn % len(SESSION_TURNS)].format(order=_order())
            status, reply = self._call(
                "POST",
                f"{path}/messages",
                "/v1/agents/{agent}/sessions/{id}/messages",
                {"message": text},
            )
            if status != 200 or not isinstance(reply, dict):
                failed = ApiError("turn_failed", f"turn {turn + 1}")
                break
            cost += float(reply.get("cost_usd") or 0.0)
        self._call("DELETE", path, "/v1/agents/{agent}/sessions/{id}", ok=(204,))
        self._task("session.conversation", started, failed)
        TALLY.add("session", ok=failed is None, cost_usd=cost)

    @tag("jobs")
    @task(2)
    def jobs(self) -> None:
        started = time.perf_counter()
        text = random.choice(TRIAGE_INPUTS).format(order=_order())  # noqa: S311
        status, body = self._call(
            "POST",
            "/v1/jobs",
            "/v1/jobs",
            {"agent": "triage", "input": text, "metadata": {"source": "load"}},
            ok=(202,),
        )
        if status != 202 or not isinstance(body, dict):
            self._task("jobs.complete", started, ApiError("job_not_submitted", "submit"))
            TALLY.add("jobs", ok=False)
            return
        self._finish_job("jobs", started, self._until_final(body["job_id"], queued=False))

    @tag("queue")
    @task(2)
    def queue(self) -> None:
        from stratus.jobs import job_id_for

        tenant = self.options.stratus_tenant_id
        url = self.options.stratus_queue_url
        if not tenant or not url:
            raise RuntimeError("the queue scenario needs --stratus-tenant-id and a queue URL")
        key = f"load-{uuid.uuid4().hex}"
        message = {
            "version": "1",
            "tenant_id": tenant,
            "agent": "triage",
            "input": random.choice(TRIAGE_INPUTS).format(order=_order()),  # noqa: S311
            "metadata": {"source": "load"},
            "idempotency_key": key,
        }
        started = time.perf_counter()
        error: Exception | None = None
        try:
            _sqs().send_message(QueueUrl=url, MessageBody=json.dumps(message))
        except Exception as exc:  # reported by its class, as Locust does for HTTP errors
            error = ApiError(type(exc).__name__, "SendMessage")
        self.environment.events.request.fire(
            request_type="SQS",
            name="SendMessage ingest",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(message["input"]),
            exception=error,
            context={},
        )
        if error is not None:
            TALLY.add("queue", ok=False)
            return
        job = self._until_final(job_id_for(tenant, key), queued=True)
        self._finish_job("queue", started, job)


_SQS: list[Any] = []


def _sqs() -> Any:
    """One SQS client for the process (boto3 clients are thread-safe; building one is not cheap).

    The endpoint and credentials come from the environment the runner gives the
    process (``AWS_ENDPOINT_URL``, the producer's access key)."""
    if not _SQS:
        import boto3

        _SQS.append(boto3.client("sqs"))
    return _SQS[0]

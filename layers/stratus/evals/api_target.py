"""The API target: cases run against a running Stratus API over HTTP (``stratus eval --api``).

Each sample is one ``POST /v1/agents/{agent}/invoke`` with the tenant's key; the
answer, cost, tokens, model and tool calls (``tool_calls``: name and arguments)
come from the response body, the latency is the round trip as the client sees it.
A list of turns runs one session (``POST .../sessions``, one ``POST .../messages``
per turn, each reply with its ``tool_calls``); before the ``DELETE`` the session is
read back (``GET .../sessions/{id}``) to rebuild the last turn's context: the stored
messages of the earlier turns that the session had not folded into its summary
(``summarized_through``). A job case is ``POST /v1/jobs`` (``route`` as given),
then ``GET /v1/jobs/{id}`` until the job is terminal (bounded by ``job_timeout_s``;
a job waiting for approval fails the sample): result, cost, tokens, steps and
``routed_to`` come from the job. A job records no tool calls, so tool assertions on
a job case fail as not observable (on every target).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stratus.evals.checks import Observation
from stratus.evals.target import job_observation, tool_calls_of

if TYPE_CHECKING:
    from stratus.evals.models import Case

#: Job statuses after which a job never changes again.
JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """The API answered with an error (``code`` is its stable error code)."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.code = code
        self.details = details or {}


class JobTimedOut(Exception):
    """A job case's job did not finish in time, or waits for an approval nobody gives."""

    code = "job_timeout"


class ApiUnreachable(Exception):
    """Nothing answers at the API URL (no local cloud running, or a wrong URL)."""


class ApiTarget:
    def __init__(
        self,
        api_url: str,
        key: str,
        schemas: Mapping[str, dict[str, Any] | None],
        *,
        versions: Mapping[str, str] | None = None,
        fake_model: bool = False,
        timeout_s: float = 60.0,
        job_timeout_s: float = 120.0,
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ApiUnreachable(f"{api_url!r} is not an http(s) URL")
        self.api_url = api_url.rstrip("/")
        self._key = key
        self._schemas = dict(schemas)
        self._versions = dict(versions or {})
        self._fake = fake_model
        self._timeout = timeout_s
        self._job_timeout = job_timeout_s
        self._lock = threading.Lock()
        self._models: dict[str, str] = {}

    def output_schema(self, agent: str) -> dict[str, Any] | None:
        return self._schemas.get(agent)

    def model(self, agent: str) -> str:
        """The model the API last answered ``agent`` with (``unknown`` before any answer)."""
        with self._lock:
            return self._models.get(agent, "unknown")

    def release(self, agent: str) -> str:
        """The agent version the API serves (from its answers), else the local spec's."""
        with self._lock:
            return self._versions.get(agent, "unknown")

    def _request(self, method: str, path: str, body: Any | None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            self.api_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise ApiUnreachable(f"no API answers at {self.api_url}: {reason}") from None
        try:
            payload = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            payload = None
        return status, payload

    def check_reachable(self) -> None:
        """Raise :class:`ApiUnreachable` unless ``GET /v1/health`` answers."""
        status, payload = self._request("GET", "/v1/health", None)
        if status != 200 or not isinstance(payload, dict):
            raise ApiUnreachable(f"{self.api_url}/v1/health answered HTTP {status}")

    def _call(self, method: str, path: str, body: Any, ok: int = 200) -> dict[str, Any]:
        status, payload = self._request(method, path, body)
        if status != ok or not isinstance(payload, dict):
            error = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(error, dict):
                details = error.get("details")
                raise ApiError(
                    status,
                    str(error.get("code")),
                    str(error.get("message")),
                    details if isinstance(details, dict) else None,
                )
            raise ApiError(status, "http_error", f"unexpected answer {str(payload)[:200]}")
        return payload

    def _session(self, agent: str, turns: list[str]) -> Observation:
        """One session over the API: create it, post each turn, delete it."""
        started = time.perf_counter()
        base = f"/v1/agents/{agent}/sessions"
        session = self._call("POST", base, {"metadata": {"source": "eval"}}, ok=201)
        path = f"{base}/{session['session_id']}"
        answers: list[str | dict[str, Any]] = []
        calls = []
        cost, tokens_in, tokens_out, last_turn = 0.0, 0, 0, 0
        try:
            for text in turns:
                reply = self._call("POST", f"{path}/messages", {"message": text})
                answers.append(reply.get("reply", ""))
                calls += tool_calls_of(reply.get("tool_calls"))
                usage = reply.get("usage") or {}
                cost += float(reply.get("cost_usd") or 0.0)
                tokens_in += int(usage.get("input_tokens") or 0)
                tokens_out += int(usage.get("output_tokens") or 0)
                last_turn = int(reply.get("turn") or 0)
            latency = time.perf_counter() - started
            context = self._context(path, last_turn)
        finally:
            self._request("DELETE", path, None)
        return Observation(
            output=answers[-1],
            model=self.model(agent),
            cost_usd=cost,
            latency_s=latency,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            tool_calls=calls,
            fake_model=self._fake,
            turns=answers,
            context=context,
        )

    def _context(self, path: str, last_turn: int) -> list[dict[str, Any]]:
        """The last turn's context as the session stored it: the messages of the earlier
        turns after ``summarized_through`` (the summary's own text is not returned)."""
        messages: list[dict[str, Any]] = []
        cursor: str | None = "0"
        folded = 0
        while cursor is not None:
            page = self._call("GET", f"{path}?limit=100&cursor={cursor}", None)
            folded = int(page.get("summarized_through") or 0)
            messages += [m for m in page.get("messages") or () if isinstance(m, dict)]
            nxt = page.get("next_cursor")
            cursor = str(nxt) if nxt is not None and str(nxt) != cursor else None
        return [
            {"role": m.get("role"), "content": m.get("content")}
            for m in messages
            if int(m.get("index") or 0) > folded and int(m.get("turn") or 0) < last_turn
        ]

    def _job(self, agent: str, user_input: str | dict[str, Any], *, route: bool) -> Observation:
        """``POST /v1/jobs``, then ``GET /v1/jobs/{id}`` until the job is terminal."""
        started = time.perf_counter()
        body = {"agent": agent, "input": user_input, "route": route, "metadata": {"source": "eval"}}
        job_id = self._call("POST", "/v1/jobs", body, ok=202)["job_id"]
        job = self._finished(job_id, started)
        latency = time.perf_counter() - started
        child = (job.get("routed_to") or {}).get("job_id")
        if child:
            # The specialist's job runs on: wait for it too, so a sample leaves nothing
            # running that could take the next sample's (scripted) model replies.
            self._finished(str(child), started)
        seen = job_observation(job, latency_s=latency, fake_model=self._fake)
        with self._lock:
            if seen.model:
                self._models[agent] = seen.model
        return seen

    def _finished(self, job_id: str, started: float) -> dict[str, Any]:
        """``GET /v1/jobs/{id}`` until the job is terminal, within ``job_timeout_s`` of
        ``started``; a job waiting for approval is never approved here (an error)."""
        delay = 0.05
        while True:
            job = self._call("GET", f"/v1/jobs/{job_id}", None)
            status = job.get("status")
            if status in JOB_TERMINAL:
                return job
            if status == "waiting_approval":
                raise JobTimedOut(
                    f"job {job_id} waits for approval; an eval job case is never approved"
                )
            if time.perf_counter() - started > self._job_timeout:
                raise JobTimedOut(f"job {job_id} is still {status} after {self._job_timeout:.0f} s")
            time.sleep(delay)  # polling a job's status: not ordering a test
            delay = min(delay * 1.5, 0.5)

    def run_case(self, agent: str, case: Case) -> Observation:
        """One run of ``case``: an invoke, a session (a list of turns) or a job."""
        if case.mode == "job":
            assert not isinstance(case.input, list)  # the model refuses a job of turns
            return self._job(agent, case.input, route=case.route)
        return self.run(agent, case.input)

    def run(self, agent: str, user_input: str | dict[str, Any] | list[str]) -> Observation:
        if isinstance(user_input, list):
            return self._session(agent, user_input)
        started = time.perf_counter()
        body = self._call("POST", f"/v1/agents/{agent}/invoke", {"input": user_input})
        latency = time.perf_counter() - started
        usage = body.get("usage") or {}
        model = str(body.get("model", ""))
        served = body.get("agent") or {}
        version = served.get("release") or served.get("version")  # the release id, if any
        with self._lock:
            self._models[agent] = model
            if isinstance(version, str):
                self._versions[agent] = version
        return Observation(
            output=body.get("output", ""),
            model=model,
            cost_usd=float(body.get("cost_usd") or 0.0),
            latency_s=latency,
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            tool_calls=tool_calls_of(body.get("tool_calls")),
            fake_model=self._fake,
        )

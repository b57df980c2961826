"""The API target: cases run against a running Stratus API over HTTP (``stratus eval --api``).

Each sample is one ``POST /v1/agents/{agent}/invoke`` with the tenant's key; the
answer, cost, tokens and model come from the response body, the latency is the
round trip as the client sees it. The API does not return the tool calls an
agent made, so on this target ``tool_called`` / ``tool_not_called`` fail with
"not observable over the API" rather than pass unchecked. A list of turns runs
one session (``POST .../sessions``, one ``POST .../messages`` per turn); the
model's context is not observable either, so ``context_contains`` fails too.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from stratus.evals.checks import Observation

TOOLS_UNOBSERVABLE = "tool calls are not observable over the API"


class ApiError(Exception):
    """The API answered with an error (``code`` is its stable error code)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.code = code


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
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ApiUnreachable(f"{api_url!r} is not an http(s) URL")
        self.api_url = api_url.rstrip("/")
        self._key = key
        self._schemas = dict(schemas)
        self._versions = dict(versions or {})
        self._fake = fake_model
        self._timeout = timeout_s
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
                raise ApiError(status, str(error.get("code")), str(error.get("message")))
            raise ApiError(status, "http_error", f"unexpected answer {str(payload)[:200]}")
        return payload

    def _session(self, agent: str, turns: list[str]) -> Observation:
        """One session over the API: create it, post each turn, delete it."""
        started = time.perf_counter()
        base = f"/v1/agents/{agent}/sessions"
        session = self._call("POST", base, {"metadata": {"source": "eval"}}, ok=201)
        path = f"{base}/{session['session_id']}"
        answers: list[str | dict[str, Any]] = []
        cost, tokens_in, tokens_out = 0.0, 0, 0
        try:
            for text in turns:
                reply = self._call("POST", f"{path}/messages", {"message": text})
                answers.append(reply.get("reply", ""))
                usage = reply.get("usage") or {}
                cost += float(reply.get("cost_usd") or 0.0)
                tokens_in += int(usage.get("input_tokens") or 0)
                tokens_out += int(usage.get("output_tokens") or 0)
        finally:
            self._request("DELETE", path, None)
        return Observation(
            output=answers[-1],
            model=self.model(agent),
            cost_usd=cost,
            latency_s=time.perf_counter() - started,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            fake_model=self._fake,
            tool_calls_unobservable=TOOLS_UNOBSERVABLE,
            turns=answers,
        )

    def run(self, agent: str, user_input: str | dict[str, Any] | list[str]) -> Observation:
        if isinstance(user_input, list):
            return self._session(agent, user_input)
        started = time.perf_counter()
        body = self._call("POST", f"/v1/agents/{agent}/invoke", {"input": user_input})
        latency = time.perf_counter() - started
        usage = body.get("usage") or {}
        model = str(body.get("model", ""))
        version = (body.get("agent") or {}).get("version")
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
            fake_model=self._fake,
            tool_calls_unobservable=TOOLS_UNOBSERVABLE,
        )

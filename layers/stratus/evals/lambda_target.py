"""The Lambda version target: cases run against one published version of an agent's function.

``stratus eval --version V`` (and the release's pre-traffic hook) must test a
version before it gets traffic, so nothing goes through API Gateway or the
``live`` alias: each sample is a Lambda ``Invoke`` of the agent's function with
``Qualifier=V`` and an API Gateway proxy event for ``POST /v1/agents/{agent}/invoke``
(a list of turns: ``POST .../sessions``, one ``POST .../sessions/{id}/messages`` per
turn, then ``DELETE``), built the way the local gateway builds it, whose authorizer
context names the eval tenant. No API key is involved: IAM on ``lambda:InvokeFunction``
is the authority. boto3 only (no ``infra`` import), so a Lambda hook can use it.

The answer, cost, tokens, tool calls, model and release (``agent.version``) come
from the response body (a version whose answers carry no ``tool_calls`` makes the
tool assertions fail as not observable); a session's context is not observable,
so ``context_contains`` fails saying so. Job cases need the queue and the worker:
on this target they fail (``job_case_unsupported``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stratus.evals.api_target import ApiError
from stratus.evals.checks import Observation, ToolCall

if TYPE_CHECKING:
    from stratus.evals.models import Case

#: The scopes the eval's requests carry (IAM on Invoke is the authority, not a key).
EVAL_SCOPES = ("invoke", "sessions")
TOOLS_UNOBSERVABLE = "this function version does not return its tool calls"


class JobCaseUnsupported(Exception):
    """A job case needs the queue and the worker, not one function version."""

    code = "job_case_unsupported"


def _tool_calls(body: Mapping[str, Any]) -> tuple[list[ToolCall], str | None]:
    """The answer's ``tool_calls`` (name, arguments); an answer without the field (an older
    version) makes the tool assertions fail as not observable, never pass silently."""
    raw = body.get("tool_calls")
    if not isinstance(raw, list):
        return [], TOOLS_UNOBSERVABLE
    calls = []
    for call in raw:
        if isinstance(call, Mapping) and isinstance(call.get("name"), str):
            arguments = call.get("arguments")
            calls.append(
                ToolCall(call["name"], dict(arguments) if isinstance(arguments, Mapping) else {})
            )
    return calls, None


class InvokeFailed(Exception):
    """The function itself failed (``X-Amz-Function-Error``), or answered no proxy response."""

    code = "function_error"


def proxy_event(
    method: str,
    path: str,
    *,
    resource: str,
    path_parameters: Mapping[str, str] | None,
    body: Any | None,
    tenant_id: str,
    stage: str = "eval",
) -> dict[str, Any]:
    """An API Gateway REST proxy event, as the gateway (and ``infra.local.gateway``) sends it,
    after the REQUEST authorizer allowed ``tenant_id``."""
    request_id = f"eval-{uuid.uuid4()}"
    now = datetime.now(UTC)
    headers = {"Content-Type": "application/json", "User-Agent": "stratus-eval"}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "eval",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "stratus-eval"},
            # What the REQUEST authorizer puts there for a key that may invoke and chat.
            "authorizer": {
                "principalId": tenant_id,
                "tenant_id": tenant_id,
                "tenant_name": "eval",
                "scopes": " ".join(EVAL_SCOPES),
            },
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


class LambdaVersionTarget:
    def __init__(
        self,
        lambda_client: Any,
        functions: Mapping[str, str],
        qualifier: str,
        schemas: Mapping[str, dict[str, Any] | None],
        *,
        tenant_id: str,
        fake_model: bool = False,
    ) -> None:
        self._client = lambda_client
        self._functions = dict(functions)
        self.qualifier = qualifier
        self._schemas = dict(schemas)
        self._tenant = tenant_id
        self._fake = fake_model
        self._lock = threading.Lock()
        self._models: dict[str, str] = {}
        self._versions: dict[str, str] = {}

    def output_schema(self, agent: str) -> dict[str, Any] | None:
        return self._schemas.get(agent)

    def model(self, agent: str) -> str:
        with self._lock:
            return self._models.get(agent, "unknown")

    def release(self, agent: str) -> str:
        """The agent version the function version answered with (``unknown`` before)."""
        with self._lock:
            return self._versions.get(agent, "unknown")

    def _invoke(self, agent: str, method: str, path: str, body: Any, ok: int) -> dict[str, Any]:
        prefix = f"/v1/agents/{agent}/"
        rest = path.removeprefix(prefix)
        if rest == "invoke":
            resource, params = path, {"agent": agent}
        else:
            resource, params = f"{prefix}{{proxy+}}", {"proxy": rest}
        event = proxy_event(
            method,
            path,
            resource=resource,
            path_parameters=params,
            body=body,
            tenant_id=self._tenant,
        )
        response = self._client.invoke(
            FunctionName=self._functions[agent],
            Qualifier=self.qualifier,
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode(),
        )
        raw = response["Payload"].read()
        try:
            payload = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            payload = None
        if response.get("FunctionError") or not isinstance(payload, dict):
            message = payload.get("errorMessage") if isinstance(payload, dict) else raw[:200]
            raise InvokeFailed(f"{self._functions[agent]}:{self.qualifier} failed: {message}")
        status = int(payload.get("statusCode") or 0)
        try:
            answer = json.loads(payload.get("body") or "null")
        except json.JSONDecodeError:
            answer = None
        if status == ok == 204:
            return {}
        if status != ok or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            if isinstance(error, dict):
                details = error.get("details")
                raise ApiError(
                    status,
                    str(error.get("code")),
                    str(error.get("message")),
                    details if isinstance(details, dict) else None,
                )
            raise ApiError(status, "http_error", f"unexpected answer {str(answer)[:200]}")
        return answer

    def _seen(self, agent: str, body: dict[str, Any]) -> None:
        served = body.get("agent") or {}
        version = served.get("release") or served.get("version")  # the release id, if any
        with self._lock:
            if body.get("model"):
                self._models[agent] = str(body["model"])
            if isinstance(version, str):
                self._versions[agent] = version

    def _session(self, agent: str, turns: list[str]) -> Observation:
        started = time.perf_counter()
        base = f"/v1/agents/{agent}/sessions"
        session = self._invoke(agent, "POST", base, {"metadata": {"source": "eval"}}, 201)
        path = f"{base}/{session['session_id']}"
        answers: list[str | dict[str, Any]] = []
        calls: list[ToolCall] = []
        hidden: str | None = None
        cost, tokens_in, tokens_out = 0.0, 0, 0
        try:
            for text in turns:
                reply = self._invoke(agent, "POST", f"{path}/messages", {"message": text}, 200)
                self._seen(agent, reply)
                answers.append(reply.get("reply", ""))
                turn_calls, missing = _tool_calls(reply)
                calls += turn_calls
                hidden = hidden or missing
                usage = reply.get("usage") or {}
                cost += float(reply.get("cost_usd") or 0.0)
                tokens_in += int(usage.get("input_tokens") or 0)
                tokens_out += int(usage.get("output_tokens") or 0)
        finally:
            # The session expires anyway; the answers are what the case checks.
            with contextlib.suppress(ApiError, InvokeFailed):
                self._invoke(agent, "DELETE", path, None, 204)
        return Observation(
            output=answers[-1],
            model=self.model(agent),
            cost_usd=cost,
            latency_s=time.perf_counter() - started,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            tool_calls=calls,
            fake_model=self._fake,
            tool_calls_unobservable=hidden,
            turns=answers,
        )

    def run_case(self, agent: str, case: Case) -> Observation:
        if case.mode == "job":
            raise JobCaseUnsupported(
                "a job case cannot run against one function version (it needs the queue "
                "and the worker); run it in-process or with --api"
            )
        return self.run(agent, case.input)

    def run(self, agent: str, user_input: str | dict[str, Any] | list[str]) -> Observation:
        if isinstance(user_input, list):
            return self._session(agent, user_input)
        started = time.perf_counter()
        body = self._invoke(agent, "POST", f"/v1/agents/{agent}/invoke", {"input": user_input}, 200)
        latency = time.perf_counter() - started
        self._seen(agent, body)
        usage = body.get("usage") or {}
        calls, hidden = _tool_calls(body)
        return Observation(
            output=body.get("output", ""),
            model=str(body.get("model", "")),
            cost_usd=float(body.get("cost_usd") or 0.0),
            latency_s=latency,
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            tool_calls=calls,
            fake_model=self._fake,
            tool_calls_unobservable=hidden,
        )

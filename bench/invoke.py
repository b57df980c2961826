"""Per-invoke overhead of the Stratus runtime over a raw ``openai`` call.

Three cases run against the same offline fake model server on loopback, in
this process, interleaved (a, b, c, then b, c, a, ...) so that drift of the
machine affects each case alike:

a. ``raw``: the ``openai`` client alone, sending what the triage agent sends
   (same system prompt, user message, JSON-schema response format and output
   token limit) through ``chat.completions.parse``.
b. ``api``: the real API handler, ``functions.handlers.api.lambda_handler``,
   with a REST API proxy event for ``POST /v1/agents/triage/invoke`` (event
   parsing and validation, settings, the agent runner, pricing, Powertools
   Logger/Metrics, the same model call, the response).
c. ``api_idempotent``: the same with a fresh ``Idempotency-Key`` on each call,
   which adds the Powertools idempotency record writes (DynamoDB, here moto).

Everything AWS runs under moto's in-process mock, so the DynamoDB part of (c)
measures moto, not DynamoDB. The handler's stdout (Powertools logs and EMF
metrics) goes to a temporary file, as it would go to the Lambda log pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from bench.common import base_event, frozen_heap, make_event
from bench.stats import summarize
from infra.local.fake_model import FakeModelServer

AGENT = "triage"
CASES = ("raw", "api", "api_idempotent")

INVOKE_ENV = {
    "STRATUS_AGENT": AGENT,
    "STRATUS_STAGE": "bench",
    "OPENAI_API_KEY": "sk-bench",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_SERVICE_NAME": "stratus",
    "POWERTOOLS_METRICS_NAMESPACE": "StratusBench",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
}
#: Variables that would send the handler somewhere else than moto and the fake server.
INVOKE_UNSET = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "STRATUS_MODEL_SECRET_NAME",
    "STRATUS_OPENAI_API_KEY",
    "STRATUS_OPENAI_BASE_URL",
    "STRATUS_PRICE_TABLE",
)


def invoke_environ() -> dict[str, str]:
    """This process's environment as a function's: ``INVOKE_ENV`` set, ``INVOKE_UNSET``
    gone; for ``mock.patch.dict(os.environ, invoke_environ(), clear=True)``."""
    kept = {k: v for k, v in os.environ.items() if k not in INVOKE_UNSET}
    return {**kept, **INVOKE_ENV}


@contextlib.contextmanager
def moto_tables(model_url: str, prefix: str) -> Iterator[dict[str, str]]:
    """The invoke environment with every table of the stack on in-process moto (made
    atomic as the local cloud's is): yields logical -> physical table names, with each
    table's ``STRATUS_*`` variable set, as a function's environment has it."""
    import boto3
    from moto import mock_aws

    from infra.definitions import TABLES, create_table_kwargs
    from infra.local import moto_atomic

    with (
        mock.patch.dict(os.environ, invoke_environ(), clear=True),
        mock.patch.dict(os.environ, {"OPENAI_BASE_URL": model_url}),
        mock_aws(),
    ):
        moto_atomic.install()
        try:
            dynamodb = boto3.client("dynamodb")
            names = {table.name: f"{prefix}{table.name}" for table in TABLES}
            for table in TABLES:
                dynamodb.create_table(**create_table_kwargs(table, names[table.name]))
            with mock.patch.dict(os.environ, {t.env_var: names[t.name] for t in TABLES}):
                yield names
        finally:
            moto_atomic.uninstall()


@contextlib.contextmanager
def captured_stdout() -> Iterator[dict[str, int]]:
    """Send file descriptor 1 to a temporary file; yields a dict that gets ``bytes``."""
    result = {"bytes": 0}
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield result
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            result["bytes"] = os.fstat(sink.fileno()).st_size


def count_aws_calls(fn: Callable[[], Any]) -> list[str]:
    """The AWS API operations one call of ``fn`` makes (through botocore)."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call  # type: ignore[attr-defined]  # private, unstubbed
    seen: list[str] = []

    def counting(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        seen.append(f"{self.meta.service_model.service_name}:{operation_name}")
        return original(self, operation_name, api_params)

    with mock.patch.object(BaseClient, "_make_api_call", counting):
        fn()
    return seen


def measure(invokes: int, warmup: int, *, log: Callable[[str], None]) -> dict[str, Any]:
    with (
        mock.patch.dict(os.environ, invoke_environ(), clear=True),
        FakeModelServer(quiet=True) as server,
        mock.patch.dict(os.environ, {"OPENAI_BASE_URL": server.url}),
        captured_stdout() as stdout,
    ):
        result = _measure(server, invokes, warmup, log=log)
    handler_calls = result.pop("_handler_calls")
    result["handler_stdout_bytes_per_invoke"] = round(stdout["bytes"] / max(1, handler_calls), 1)
    return result


def _measure(
    server: FakeModelServer, invokes: int, warmup: int, *, log: Callable[[str], None]
) -> dict[str, Any]:
    # Imported here, after the environment is set: Powertools reads it on import.
    import boto3
    import openai
    from moto import mock_aws

    from infra.definitions import TABLES, create_table_kwargs

    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        tables: dict[str, str] = {}
        for table in TABLES:
            name = f"stratus-bench-{table.name}"
            dynamodb.create_table(**create_table_kwargs(table, name))
            tables[table.env_var] = name
        with mock.patch.dict(os.environ, tables):
            return _run_cases(server, invokes, warmup, openai_module=openai, log=log)


def _run_cases(
    server: FakeModelServer,
    invokes: int,
    warmup: int,
    *,
    openai_module: Any,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from functions.agents import load_agent
    from functions.handlers import api
    from stratus import composition
    from tests.support import FakeLambdaContext

    # A clean "warm Lambda" state: this process's runtime, built from this environment.
    runtime = composition.Runtime.from_env()
    composition.install(runtime)
    settings = runtime.settings
    spec = load_agent(AGENT)
    event = base_event()
    user_input = json.loads(event["body"])["input"]
    messages = [
        {"role": "system", "content": spec.system_prompt},
        {"role": "user", "content": user_input},
    ]
    model = settings.model_for(spec.tier)
    client = openai_module.OpenAI(api_key="sk-bench", base_url=server.url, max_retries=0)
    handler_calls = 0

    def raw() -> None:
        completion = client.chat.completions.parse(
            model=model,
            messages=messages,
            response_format=spec.output_schema,
            max_completion_tokens=spec.limits.max_output_tokens,
        )
        if completion.choices[0].message.parsed is None:
            raise RuntimeError("the raw call returned no parsed output")

    def invoke(idempotent: bool) -> None:
        nonlocal handler_calls
        handler_calls += 1
        key = f"bench-{uuid.uuid4()}" if idempotent else None
        reply = api.lambda_handler(make_event(event, key), FakeLambdaContext())
        if reply.get("statusCode") != 200:
            raise RuntimeError(f"the API handler answered {reply.get('statusCode')}: {reply}")

    runners: dict[str, Callable[[], None]] = {
        "raw": raw,
        "api": lambda: invoke(False),
        "api_idempotent": lambda: invoke(True),
    }

    for _ in range(warmup):
        for case in CASES:
            runners[case]()
    log(f"  invoke: warmed up ({warmup} of each)")

    # What one call of each case does, counted outside the timed loop.
    calls: dict[str, dict[str, Any]] = {}
    for case in CASES:
        server.reset()
        operations = count_aws_calls(runners[case])
        calls[case] = {"model_http_calls": server.call_count(), "aws_api_calls": operations}
    server.reset()

    samples: dict[str, list[float]] = {case: [] for case in CASES}
    step = max(1, invokes // 4)
    with frozen_heap():  # as a warm function's init left it (bench.common)
        for index in range(invokes):
            shift = index % len(CASES)
            for case in CASES[shift:] + CASES[:shift]:
                started = time.perf_counter()
                runners[case]()
                samples[case].append((time.perf_counter() - started) * 1000.0)
            if (index + 1) % step == 0 or index + 1 == invokes:
                log(f"  invoke: {index + 1}/{invokes}")
            if (index + 1) % 100 == 0:
                server.reset()  # keep the recorded-request list short
    server.reset()
    composition.reset()

    summaries = {case: summarize(samples[case]) for case in CASES}
    raw_median = summaries["raw"]["median"]

    def paired(case: str) -> float:
        diffs = [b - a for a, b in zip(samples["raw"], samples[case], strict=True)]
        return round(summarize(diffs, keep_samples=False)["median"], 3)

    return {
        "invokes": invokes,
        "warmup": warmup,
        "agent": AGENT,
        "model": model,
        "max_completion_tokens": spec.limits.max_output_tokens,
        "fake_model_url": server.url,
        "cases": summaries,
        "per_call": calls,
        "overhead_ms": {
            "api": round(summaries["api"]["median"] - raw_median, 3),
            "api_idempotent": round(summaries["api_idempotent"]["median"] - raw_median, 3),
        },
        "overhead_paired_median_ms": {
            "api": paired("api"),
            "api_idempotent": paired("api_idempotent"),
        },
        "_handler_calls": handler_calls,
    }

"""OpenTelemetry GenAI spans over OTLP/HTTP (issue 16), against a real OTLP receiver on
loopback that decodes the protobuf request; the tool-call log lines; off by default."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from functions.handlers import api
from infra.local import moto_atomic
from infra.local.fake_model import FakeModelServer
from stratus import correlation, otel
from stratus.observability import logger
from tests.support import api_event, call

ROOT = Path(__file__).resolve().parents[2]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportTraceServiceRequest()
                request.ParseFromString(raw)
                for resource_spans in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            outer.spans.append(
                                {
                                    "name": span.name,
                                    "kind": span.kind,
                                    "duration_ns": span.end_time_unix_nano
                                    - span.start_time_unix_nano,
                                    "attributes": {a.key: _value(a.value) for a in span.attributes},
                                    "resource": resource,
                                }
                            )
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(logger.registered_formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    monkeypatch.setenv(otel.ENDPOINT_ENV, server.url)
    otel.reset()
    yield server
    otel.reset()
    server.close()


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    handler = Lines()
    logger._logger.addHandler(handler)
    level = logger.log_level
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger._logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def atomic_moto() -> Iterator[None]:
    moto_atomic.install()
    yield
    moto_atomic.uninstall()


def _invoke_with_a_tool_call(cloud: dict[str, Any], correlation_id: str) -> Any:
    boto3.resource("dynamodb").Table(cloud["tables"]["orders"]).put_item(
        Item={"tenant_id": "tenant-a", "order_id": "A-1001", "status": "in_transit"}
    )
    return call(
        api.lambda_handler,
        api_event(
            "order_status",
            body={"input": "Where is my order A-1001?"},
            headers={"X-Correlation-Id": correlation_id},
        ),
    )


def test_model_and_tool_calls_reach_the_otlp_endpoint_with_the_genai_attributes(
    serve_agent: Any,
    cloud: dict[str, Any],
    fake_model: FakeModelServer,
    receiver: OtlpReceiver,
    lines: list[dict[str, Any]],
) -> None:
    serve_agent("order_status")
    reply = _invoke_with_a_tool_call(cloud, "otel-flow-1")
    assert reply.status == 200, reply.body
    assert reply.headers["X-Correlation-Id"] == "otel-flow-1"
    assert reply.body["tool_calls"][0]["name"] == "lookup_order"

    # The handler flushed before answering: the receiver has every span already.
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    chats = [s for s in receiver.spans if s["name"].startswith("chat ")]
    tools = [s for s in receiver.spans if s["name"].startswith("execute_tool ")]
    assert len(chats) == 2  # the call that asks for the tool, the one that answers
    release = reply.body["agent"]["release"]
    for span in chats:
        attrs = span["attributes"]
        assert span["name"] == f"chat {attrs['gen_ai.request.model']}"
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.response.model"]
        assert attrs["gen_ai.agent.name"] == "order_status"
        assert attrs["stratus.release"] == release
        assert attrs["correlation_id"] == "otel-flow-1"
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert span["duration_ns"] > 0
    usage = reply.body["usage"]
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in chats) == usage["input_tokens"]
    assert (
        sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in chats) == usage["output_tokens"]
    )
    assert sum(s["attributes"]["stratus.cost_usd"] for s in chats) == pytest.approx(
        reply.body["cost_usd"]
    )
    assert chats[0]["resource"]["service.name"]

    ((tool,),) = [tools]
    assert tool["name"] == "execute_tool lookup_order"
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attributes"]["gen_ai.tool.name"] == "lookup_order"
    assert tool["attributes"]["stratus.outcome"] == "ok"
    assert tool["attributes"]["correlation_id"] == "otel-flow-1"
    assert not any("A-1001" in json.dumps(s["attributes"]) for s in receiver.spans)

    # One log line per executed tool call: sizes, never the arguments or the result.
    (logged,) = [line for line in lines if line.get("message") == "tool call"]
    assert logged["tool"] == "lookup_order" and logged["outcome"] == "ok"
    assert logged["args_bytes"] == len(json.dumps({"order_id": "A-1001"}))  # as the model sent
    assert logged["result_bytes"] > 0 and logged["duration_ms"] >= 0
    assert logged["correlation_id"] == "otel-flow-1"
    assert "A-1001" not in json.dumps(logged) and "in_transit" not in json.dumps(logged)
    assert all(line.get("correlation_id") == "otel-flow-1" for line in lines)


def test_an_unreachable_endpoint_never_fails_a_request(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer, monkeypatch: Any
) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there any more
    monkeypatch.setenv(otel.ENDPOINT_ENV, f"http://127.0.0.1:{port}")
    otel.reset()
    try:
        serve_agent("order_status")
        reply = _invoke_with_a_tool_call(cloud, "otel-down")
        assert reply.status == 200, reply.body
        assert reply.headers["X-Correlation-Id"] == "otel-down"
    finally:
        otel.reset()
        correlation.clear()


def test_without_an_endpoint_nothing_is_exported_or_built(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer, monkeypatch: Any
) -> None:
    monkeypatch.delenv(otel.ENDPOINT_ENV, raising=False)
    otel.reset()
    serve_agent("order_status")
    assert _invoke_with_a_tool_call(cloud, "otel-off").status == 200
    assert otel._state == {}  # no provider, no tracer


PROBE = """
import json, sys
import functions.handlers.api, functions.handlers.worker
import snapshot_restore_py
from stratus import snapstart
snapstart.run_hooks(snapshot_restore_py.get_before_snapshot())
print(json.dumps({"primed": snapstart.primed(),
                  "otel": sorted({m.split(".")[0] for m in sys.modules} & {"opentelemetry"})}))
"""


def _cold(extra: dict[str, str]) -> dict[str, Any]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "STRATUS_AGENT": "triage",
        "OPENAI_API_KEY": "sk-test",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
        **extra,
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_default_cold_start_of_an_agent_function_imports_no_opentelemetry() -> None:
    off = _cold({})
    assert off["primed"] is True  # the agent function's init really ran
    assert off["otel"] == []
    # With an endpoint the exporter is built at init (the check above can fail).
    on = _cold({otel.ENDPOINT_ENV: "http://127.0.0.1:9"})
    assert on["primed"] is True and on["otel"] == ["opentelemetry"]
    assert os.environ.get(otel.ENDPOINT_ENV) is None  # this process's default stays off

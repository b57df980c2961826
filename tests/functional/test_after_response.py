"""Settling after the response: the internal extension against the Extensions API on loopback.

The API handler runs on moto with the real ``openai`` client; the Extensions API is
``infra.local.extensions_api`` (register, event/next, as Lambda serves them). Each
test drives one execution environment: an ``INVOKE`` event to the extension, the
handler's call, then the extension's next ``event/next`` (when Lambda freezes).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from functions.handlers import api
from infra.local.extensions_api import ExtensionsApiServer
from infra.local.fake_model import FakeModelServer, Fault
from stratus import after_response, composition
from stratus.budgets import from_nano
from tests.functional.gateway_support import today
from tests.support import FakeLambdaContext, api_event, call, json_lines

DAY = f"TENANT#tenant-a#DAY#{today()}"


@pytest.fixture
def extension(serve_agent: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ExtensionsApiServer]:
    """The triage function on Lambda: the extension registered at init, its thread waiting."""
    serve_agent("triage")
    with ExtensionsApiServer() as server:
        monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", server.address)
        after_response.stop()
        assert after_response.start()
        assert server.wait_ready()
        try:
            yield server
        finally:
            after_response.stop()


def _budget(field: str) -> Any:
    import boto3

    table = composition.current().settings.budgets_table
    item = boto3.resource("dynamodb").Table(table).get_item(Key={"pk": DAY}, ConsistentRead=True)
    return from_nano((item.get("Item") or {}).get(field))


def _held_settlements() -> threading.Event:
    """Make every budget settlement wait for the returned event."""
    budgets = composition.current().gateway.budgets
    settle, release = budgets.settle, threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(20)
        return settle(*args, **kwargs)

    budgets.settle = held  # type: ignore[method-assign]
    return release


def _invoke(server: ExtensionsApiServer, body: Any, key: str | None = None) -> Any:
    """One invoke as Lambda makes it: the INVOKE event to the extension, then the handler."""
    context = FakeLambdaContext()
    server.invoke(context.aws_request_id)
    headers = {"Idempotency-Key": key} if key else None
    return call(api.lambda_handler, api_event("triage", body=body, headers=headers), context)


def test_the_answer_leaves_before_its_settlement_which_ends_the_invoke(
    extension: ExtensionsApiServer, fake_model: FakeModelServer
) -> None:
    release = _held_settlements()
    reply = _invoke(extension, {"input": "Where is my order A-1001?"})

    assert reply.status == 200, reply.body
    cost = reply.body["cost_usd"]
    assert cost > 0
    # The client has its answer; the settlement is still held, and so is the environment.
    assert _budget("spent") == 0 and _budget("committed") > 0
    assert extension.wait_next(timeout=0.3) is None
    release.set()
    assert extension.wait_next() is not None  # the extension asked for its next event...
    assert float(_budget("spent")) == pytest.approx(cost)  # ...once everything was written
    assert _budget("committed") == _budget("spent")  # no reservation left open

    # The next invoke of the environment starts from the settled state.
    again = _invoke(extension, {"input": "And order A-1002?"})
    assert again.status == 200
    assert extension.wait_next() is not None
    assert float(_budget("spent")) == pytest.approx(cost + again.body["cost_usd"])


def test_a_failed_or_refused_request_ends_its_invoke_too(
    extension: ExtensionsApiServer, fake_model: FakeModelServer
) -> None:
    refused = _invoke(extension, {"input": "x" * 1_000_000})  # refused before any call
    assert refused.status in (400, 413), refused.body
    assert extension.wait_next() is not None

    fake_model.inject(Fault(status=500, times=50))  # every model of the chain fails
    failed = _invoke(extension, {"input": "Where is my order A-1001?"})
    assert failed.status >= 500 and failed.body["error"]["code"]
    assert extension.wait_next() is not None
    assert _budget("committed") == _budget("spent")  # nothing left held by the failed call


def test_a_wave_still_running_at_the_deadline_does_not_hold_the_invoke(
    extension: ExtensionsApiServer, fake_model: FakeModelServer
) -> None:
    settler = after_response.active()
    assert settler is not None
    release = _held_settlements()
    context = FakeLambdaContext()
    # The handler has 3 s before the extension's margin: it answers well within them, and
    # its held settlement is still running when they are up.
    extension.invoke(context.aws_request_id, timeout_s=after_response.DEADLINE_MARGIN_S + 3.0)
    reply = call(api.lambda_handler, api_event("triage", body={"input": "hi"}), context)
    assert reply.status == 200
    assert extension.wait_next() is not None  # at the deadline, not when the wave ends
    assert settler.late == 1
    release.set()  # the held write completes later (when the environment runs again)


def test_without_the_extension_the_handler_settles_before_it_returns(
    serve_agent: Any, monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")
    after_response.stop()
    with ExtensionsApiServer() as server:
        monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", server.address)
        server.refuse()
        assert not after_response.start()  # registration refused: in-line settlement
        monkeypatch.setenv("STRATUS_SETTLE_AFTER_RESPONSE", "false")
        server_ok = ExtensionsApiServer()
        with server_ok:
            monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", server_ok.address)
            assert not after_response.start()  # switched off
            assert server_ok.registered == 0
    monkeypatch.delenv("STRATUS_SETTLE_AFTER_RESPONSE")
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API")
    assert not after_response.start()  # not on Lambda
    reply = call(api.lambda_handler, api_event("triage", body={"input": "Where is A-1001?"}))
    assert reply.status == 200
    assert float(_budget("spent")) == pytest.approx(reply.body["cost_usd"])


def test_an_extensions_api_that_dies_halfway_turns_settling_in_line(
    serve_agent: Any, monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")
    after_response.stop()
    server = ExtensionsApiServer()
    with server:
        monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", server.address)
        assert after_response.start() and server.wait_ready()
        settler = after_response.active()
        assert settler is not None
    # The API is gone while the extension waits for its next event: it gives up...
    for _ in range(200):
        if after_response.active() is None:
            break
        threading.Event().wait(0.05)
    assert after_response.active() is None and not settler.working
    try:  # ...and the handler writes everything before it returns again.
        reply = call(api.lambda_handler, api_event("triage", body={"input": "Where is A-1001?"}))
        assert reply.status == 200
        assert float(_budget("spent")) == pytest.approx(reply.body["cost_usd"])
    finally:
        after_response.stop()


def test_the_idempotent_invoke_saves_its_record_before_the_answer_and_settles_after(
    extension: ExtensionsApiServer, fake_model: FakeModelServer
) -> None:
    release = _held_settlements()
    body = {"input": "Where is my order A-1001?"}
    first = _invoke(extension, body, "k-after-1")
    assert first.status == 200
    release.set()
    assert extension.wait_next() is not None
    calls = fake_model.call_count()
    # The replay (in any environment) gets the stored answer: the record was saved first.
    replay = _invoke(extension, body, "k-after-1")
    assert replay.status == 200 and replay.body == first.body
    assert fake_model.call_count() == calls
    assert extension.wait_next() is not None


def test_the_api_handler_registers_the_extension_in_its_init_phase(tmp_path: Any) -> None:
    """Importing the handler module as Lambda's runtime does registers before the first Next."""
    import os
    import subprocess
    import sys

    from infra.paths import REPO_ROOT

    with ExtensionsApiServer() as server:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "layers"), str(REPO_ROOT)]),
            "AWS_LAMBDA_RUNTIME_API": server.address,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",  # the runtime runs the hooks
            "STRATUS_AGENT": "triage",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
        env.pop("STRATUS_SETTLE_AFTER_RESPONSE", None)
        # The process stays up (as a Lambda runtime does) until its stdin is closed.
        process = subprocess.Popen(
            [sys.executable, "-c", "import functions.handlers.api, sys; sys.stdin.read()"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready = server.wait_ready(timeout=120)  # registered, then waiting for an event
        finally:
            _, err = process.communicate("", timeout=120)
        assert process.returncode == 0, err
        assert ready and server.registered == 1


@pytest.fixture
def info_logs() -> Iterator[io.StringIO]:
    """The agent's log lines at INFO (the suite runs it at WARNING), into a buffer."""
    from stratus.observability import logger

    level, handler, buffer = logger.log_level, logger.registered_handler, io.StringIO()
    stream = handler.setStream(buffer)  # type: ignore[attr-defined]
    logger.setLevel("INFO")
    try:
        yield buffer
    finally:
        logger.setLevel(level)
        handler.setStream(stream)  # type: ignore[attr-defined]


def _drain(buffer: io.StringIO, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The log lines written to ``buffer`` and the EMF lines printed since the last call."""
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return json_lines(text + "\n" + capsys.readouterr().out)


def _emitted(docs: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The log messages and the EMF metric names among ``docs``."""
    messages = {str(d.get("message")) for d in docs if "message" in d}
    metrics = {
        m["Name"]
        for d in docs
        for directive in (d.get("_aws") or {}).get("CloudWatchMetrics", [])
        for m in directive.get("Metrics", [])
    }
    return messages, metrics


def test_the_logs_and_metrics_of_a_request_are_emitted_after_its_answer(
    extension: ExtensionsApiServer,
    fake_model: FakeModelServer,
    capsys: pytest.CaptureFixture[str],
    info_logs: io.StringIO,
) -> None:
    """Formatting them is CPU the answer no longer waits for; nothing is dropped, and the
    lines keep the request's context."""
    release = _held_settlements()
    _drain(info_logs, capsys)
    reply = _invoke(extension, {"input": "Where is my order A-1001?"})
    assert reply.status == 200
    messages, metrics = _emitted(_drain(info_logs, capsys))
    assert "model call" not in messages and "agent invoked" not in messages
    assert not {"ModelCalls", "Tasks", "CostMicroUSD"} & metrics

    release.set()
    assert extension.wait_next() is not None  # the extension emitted them, then asked next
    docs = _drain(info_logs, capsys)
    messages, metrics = _emitted(docs)
    assert {"model call", "agent invoked"} <= messages
    assert {"ModelCalls", "ModelLatency", "Tasks", "CostMicroUSD"} <= metrics
    (invoked,) = [d for d in docs if d.get("message") == "agent invoked"]
    assert invoked["tenant_id"] == "tenant-a" and invoked["agent"] == "triage"
    (model_call,) = [d for d in docs if d.get("message") == "model call"]
    assert model_call["latency_ms"] > 0
    assert invoked.get("correlation_id") == model_call.get("correlation_id")


def test_without_the_extension_logs_and_metrics_are_emitted_before_the_answer(
    serve_agent: Any,
    monkeypatch: pytest.MonkeyPatch,
    fake_model: FakeModelServer,
    capsys: pytest.CaptureFixture[str],
    info_logs: io.StringIO,
) -> None:
    serve_agent("triage")
    after_response.stop()
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    _drain(info_logs, capsys)
    reply = call(api.lambda_handler, api_event("triage", body={"input": "Where is A-1001?"}))
    assert reply.status == 200
    messages, metrics = _emitted(_drain(info_logs, capsys))
    assert {"model call", "agent invoked"} <= messages
    assert {"ModelCalls", "Tasks", "CostMicroUSD"} <= metrics


def test_an_extension_that_breaks_during_a_request_leaves_it_writing_before_the_answer(
    extension: ExtensionsApiServer,
    fake_model: FakeModelServer,
    capsys: pytest.CaptureFixture[str],
    info_logs: io.StringIO,
) -> None:
    """The request began collecting for the extension, which then stops working (its
    Extensions API gone): the handler writes and emits what it collected itself."""
    settler = after_response.active()
    assert settler is not None
    budgets = composition.current().gateway.budgets
    reserve = budgets.reserve

    def breaking(*args: Any, **kwargs: Any) -> Any:
        settler._broken = True  # what the extension's loop sets when its API is gone
        return reserve(*args, **kwargs)

    budgets.reserve = breaking  # type: ignore[method-assign]
    _drain(info_logs, capsys)
    reply = call(api.lambda_handler, api_event("triage", body={"input": "Where is A-1001?"}))
    assert reply.status == 200
    assert float(_budget("spent")) == pytest.approx(reply.body["cost_usd"])
    messages, metrics = _emitted(_drain(info_logs, capsys))
    assert {"model call", "agent invoked"} <= messages
    assert {"ModelCalls", "Tasks", "CostMicroUSD"} <= metrics

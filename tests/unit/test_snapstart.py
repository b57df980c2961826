"""Init-phase priming and SnapStart restore hooks (``stratus.snapstart``).

Priming runs on a real ``Runtime`` built from settings (tables named, nothing
behind them): every AWS call is recorded with ``bench.roundtrips`` and there must
be none, and the model endpoint is a closed port, so a model request would fail
the priming. Which modules a fresh process has loaded is checked in subprocesses.
"""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import snapshot_restore_py

from bench.roundtrips import recording
from functions.agents import load_agent
from stratus import composition, snapstart
from stratus.config import Settings

REPO = Path(__file__).resolve().parents[2]
#: Nothing listens on the discard port: a model request during priming would fail it.
CLOSED = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def _fresh(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(snapstart, "_warmers", [])  # the handler's own, tested below
    monkeypatch.setattr(snapstart, "_sdk_warmed", set())
    composition.reset()
    snapstart.forget()
    yield
    composition.reset()
    snapstart.forget()
    gc.unfreeze()  # what a prime froze goes back to the collector


def _runtime(agent: str = "triage", **overrides: Any) -> composition.Runtime:
    fields: dict[str, Any] = {
        "agent": agent,
        "openai_api_key": "sk-test",
        "openai_base_url": CLOSED,
        "idempotency_table": "idem",
        "budgets_table": "budgets",
        "ledger_table": "ledger",
        "usage_table": "usage",
        "limits_table": "limits",
        "sessions_table": "sessions",
        "alerts_topic_name": "alerts",
        **overrides,
    }
    runtime = composition.Runtime(Settings(**fields))
    composition.install(runtime)
    return runtime


def test_prime_builds_the_agents_runtime_without_any_request() -> None:
    runtime = _runtime()
    with recording() as trace:
        assert snapstart.prime(load_agent) is True
    assert trace.requests() == 0  # no DynamoDB, Secrets Manager, STS or SNS call
    built = runtime.__dict__  # cached_property members that were built
    for member in ("prices", "gateway", "model_client", "budgets", "ledger", "breaker", "flags"):
        assert member in built, member
    assert snapstart.primed()
    spec = load_agent("triage")
    assert "system_prompt" in spec.__dict__  # the prompt file was read
    from stratus.ledger import json_schema

    hits = json_schema.cache_info().hits
    json_schema(spec.output_schema)  # the request hash's schema: built at init already
    assert json_schema.cache_info().hits == hits + 1
    # The model HTTP client exists already (the key is local): the request reuses it.
    assert list(runtime.model_client._clients) == ["sk-test"]
    service = runtime.invoke_service(spec)
    assert snapstart.prime(load_agent) is True  # a second prime is a no-op
    assert runtime.invoke_service(spec) is service


def test_priming_runs_the_sdk_calls_on_loopback_and_the_handlers_warmers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stratus import priming_model

    runtime = _runtime()
    seen: list[composition.Runtime] = []
    endpoints: list[priming_model.PrimingModel] = []
    opened = priming_model.PrimingModel.__enter__

    def spy(self: priming_model.PrimingModel) -> priming_model.PrimingModel:
        endpoints.append(self)
        return opened(self)

    monkeypatch.setattr(priming_model.PrimingModel, "__enter__", spy)
    snapstart.register(load_agent, seen.append)
    with recording() as trace:
        assert snapstart.prime(load_agent) is True
    assert trace.requests() == 0
    assert seen == [runtime]
    assert snapstart._sdk_warmed == {"triage"}
    # Both calls went over one loopback connection, which is gone again: a SnapStart
    # snapshot taken now holds no socket and no serving thread.
    [endpoint] = endpoints
    assert endpoint.answered == 2
    assert endpoint.base_url.startswith("http://127.0.0.1:")
    assert not endpoint._thread.is_alive()
    assert endpoint._server.fileno() == -1  # closed


def test_the_api_handler_warms_its_routes_with_a_rejected_request() -> None:
    from functions.handlers import api

    runtime = _runtime()
    with recording() as trace:
        api.warm_routes(runtime)  # raises unless the priming request answered 422
    assert trace.requests() == 0
    api.warm_routes(_runtime(agent=""))  # the platform function: nothing to warm


def test_the_priming_request_counts_as_no_request_and_no_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from functions.handlers import api
    from stratus import task_metrics

    api.warm_routes(_runtime())
    assert "CloudWatchMetrics" not in capsys.readouterr().out  # no Requests, no ErrorCode
    # Only priming is muted: the same rejection afterwards is a request like any other.
    task_metrics.task_ended("triage", "sync", error=RuntimeError("boom"), latency_ms=1.0)
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [doc["Requests"] for doc in documents if "Requests" in doc] == [[1.0], [1.0]]


def test_prime_freezes_what_the_init_built_out_of_the_collectors_reach() -> None:
    gc.unfreeze()
    _runtime()
    assert snapstart.prime(load_agent) is True
    assert gc.get_freeze_count() > 10_000  # modules, classes, schemas: never walked by a collection


def test_with_the_key_in_secrets_manager_priming_never_fetches_it() -> None:
    runtime = _runtime(openai_api_key="", model_secret_name="stratus/model")
    with recording() as trace:
        assert snapstart.prime(load_agent) is True
    assert trace.requests() == 0
    assert runtime.model_client._clients == {}  # no client keyed by a real key yet


def test_the_platform_function_only_builds_its_settings() -> None:
    runtime = _runtime(agent="")
    assert snapstart.prime(load_agent) is True
    for member in ("prices", "gateway", "model_client", "keys", "budgets"):
        assert member not in runtime.__dict__, member


def test_a_failed_prime_is_logged_not_raised_and_retried_next_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _runtime()
    calls: list[str] = []

    def broken(name: str) -> Any:
        calls.append(name)
        raise RuntimeError("spec store unavailable")

    assert snapstart.prime(broken) is False
    assert not snapstart.primed()
    assert "priming failed" in caplog.messages
    assert snapstart.prime(load_agent) is True
    assert calls == ["triage"]


def test_after_restore_reseeds_and_rebuilds_clients_and_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = _runtime()
    assert snapstart.prime(load_agent)
    old_dynamodb = old.clients.client("dynamodb")
    old_model = old.model_client._clients["sk-test"]
    random.seed(1234)
    snapshot_draw = random.random()
    random.seed(1234)  # every copy restored from one snapshot would draw the same
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated-after-restore")

    with recording() as trace:
        snapstart.after_restore(load_agent)

    assert trace.requests() == 0
    assert random.random() != snapshot_draw
    new = composition.current()
    assert new is not old and new.settings is old.settings
    assert snapstart.primed()
    new_dynamodb = new.clients.client("dynamodb")
    assert new_dynamodb is not old_dynamodb
    assert new.clients.session is not old.clients.session
    credentials = new_dynamodb._request_signer._credentials
    assert credentials.access_key == "rotated-after-restore"  # read again, not from the snapshot
    assert new.model_client._clients["sk-test"] is not old_model
    # The service models parsed before the snapshot are kept.
    old_loader = old.clients.session._session.get_component("data_loader")
    assert new.clients.session._session.get_component("data_loader") is old_loader


def test_register_adds_each_hook_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    snapstart.register(load_agent)
    snapstart.register(load_agent)
    assert snapshot_restore_py.get_before_snapshot() == [(snapstart.prime, (load_agent,), {})]
    assert snapshot_restore_py.get_after_restore() == [(snapstart.after_restore, (load_agent,), {})]


@pytest.mark.parametrize(
    ("init_type", "runs"),
    [
        (None, False),  # tests, scripts, the bench: whoever imports runs the hooks
        ("snap-start", False),  # Lambda runs them before taking the snapshot
        ("on-demand", True),  # $LATEST / no SnapStart: Lambda never runs them
        ("provisioned-concurrency", True),
    ],
)
def test_init_phase_runs_the_hooks_only_where_lambda_will_not(
    monkeypatch: pytest.MonkeyPatch, init_type: str | None, runs: bool
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(
        snapshot_restore_py, "_before_snapshot_registry", [(ran.append, ("prime",), {})]
    )
    if init_type is None:
        monkeypatch.delenv("AWS_LAMBDA_INITIALIZATION_TYPE", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", init_type)
    assert snapstart.init_phase() is runs
    assert ran == (["prime"] if runs else [])


def test_the_api_handler_registers_its_hooks() -> None:
    from functions.handlers import api

    assert (snapstart.prime, (load_agent,), {}) in snapshot_restore_py.get_before_snapshot()
    snapstart.register(load_agent, api.warm_routes)  # as the module does at import
    assert snapstart._warmers == [api.warm_routes]
    assert (snapstart.after_restore, (load_agent,), {}) in snapshot_restore_py.get_after_restore()


PROBE = """
import json, sys
import functions.handlers.api
imported = "openai" in sys.modules
import snapshot_restore_py
from stratus import snapstart
snapstart.run_hooks(snapshot_restore_py.get_before_snapshot())
print(json.dumps({"at_import": imported, "after_init": "openai" in sys.modules,
                  "primed": snapstart.primed()}))
"""


def _fresh_process(agent: str, init_type: str | None = None) -> dict[str, bool]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "STRATUS_AGENT": agent,
        "OPENAI_API_KEY": "sk-test",
    }
    if init_type:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = init_type
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, bool] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_an_agent_function_imports_openai_at_init_the_platform_never() -> None:
    assert _fresh_process("triage") == {"at_import": False, "after_init": True, "primed": True}
    assert _fresh_process("") == {"at_import": False, "after_init": False, "primed": True}


def test_on_demand_lambda_init_primes_inside_the_import() -> None:
    assert _fresh_process("triage", "on-demand")["at_import"] is True
    assert _fresh_process("triage", "snap-start")["at_import"] is False


def test_invalid_settings_do_not_fail_the_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request path answers the configuration error in the API's shape instead."""
    monkeypatch.setenv("STRATUS_MAX_BODY_BYTES", "-1")
    composition.reset()
    assert snapstart.prime(load_agent) is False
    assert not snapstart.init_phase()  # no Lambda init type set: nothing runs at import

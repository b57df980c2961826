"""``GET /v1/health`` tells the truth: each dependency the function uses (its tables, the
model secret, its queues), with ``ok`` and ``latency_ms``; 503 naming the failing ones;
nothing sensitive (no physical names, ARNs, URLs or key material) in the body.

The real API handler in-process against moto (tables, secret, queues)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from functions.handlers import api
from stratus.health import HealthReport
from tests.support import call, load_event


def _health() -> Any:
    return call(api.lambda_handler, load_event("api/health.json"))


def _assert_reveals_nothing(body: dict[str, Any], cloud: dict[str, Any], *extra: str) -> None:
    text = json.dumps(body)
    for secret in (cloud["secret_arn"], "sk-test-primary", "arn:", "https://", *extra):
        assert secret not in text
    for table in cloud["tables"].values():
        assert table not in text


def test_the_platform_reports_every_table_it_uses_with_a_latency(
    serve_agent: Any, cloud: dict[str, Any]
) -> None:
    serve_agent("")
    reply = _health()
    assert reply.status == 200, reply.body
    report = HealthReport.model_validate(reply.body)
    assert report.failing == [] and report.status == "ok"
    for label in ("tenants_table", "idempotency_table", "budgets_table", "jobs_table"):
        assert report.dependencies[label].ok, label
        assert report.dependencies[label].latency_ms >= 0
    _assert_reveals_nothing(reply.body, cloud)


def test_a_missing_model_secret_is_a_503_naming_model_secret(
    serve_agent: Any, cloud: dict[str, Any]
) -> None:
    serve_agent("triage")
    ok = _health()
    assert ok.status == 200, ok.body
    assert ok.body["dependencies"]["model_secret"]["ok"] is True

    boto3.client("secretsmanager").delete_secret(
        SecretId=cloud["secret_arn"], ForceDeleteWithoutRecovery=True
    )
    serve_agent("triage")  # a new process: no cached keys
    degraded = _health()
    assert degraded.status == 503
    assert degraded.body["status"] == "degraded"
    assert degraded.body["failing"] == ["model_secret"]
    secret = degraded.body["dependencies"]["model_secret"]
    assert secret["ok"] is False and secret["latency_ms"] >= 0
    assert all(
        dep["ok"] for name, dep in degraded.body["dependencies"].items() if name != "model_secret"
    )
    _assert_reveals_nothing(degraded.body, cloud)


def test_a_secret_without_keys_is_not_ok(serve_agent: Any, cloud: dict[str, Any]) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=cloud["secret_arn"], SecretString=json.dumps({"api_keys": []})
    )
    serve_agent("triage")
    reply = _health()
    assert reply.status == 503 and reply.body["failing"] == ["model_secret"]


def test_a_missing_table_is_named(
    serve_agent: Any, cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_BUDGETS_TABLE", "stratus-test-no-such-table")
    serve_agent("")
    reply = _health()
    assert reply.status == 503
    assert reply.body["failing"] == ["budgets_table"]
    _assert_reveals_nothing(reply.body, cloud, "stratus-test-no-such-table")


def test_the_queues_a_function_sends_to_are_checked(
    serve_agent: Any, cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = boto3.client("sqs")
    triage = sqs.create_queue(QueueName="stratus-test-agent-triage")["QueueUrl"]
    callbacks = sqs.create_queue(QueueName="stratus-test-callbacks")["QueueUrl"]
    monkeypatch.setenv("STRATUS_JOB_QUEUES", json.dumps({"triage": triage}))
    monkeypatch.setenv("STRATUS_CALLBACK_QUEUE_URL", callbacks)
    serve_agent("")
    reply = _health()
    assert reply.status == 200, reply.body
    deps = reply.body["dependencies"]
    assert deps["queue_triage"]["ok"] and deps["queue_callbacks"]["ok"]

    sqs.delete_queue(QueueUrl=triage)
    reply = _health()
    assert reply.status == 503
    assert reply.body["failing"] == ["queue_triage"]
    _assert_reveals_nothing(reply.body, cloud, triage, "stratus-test-agent-triage")

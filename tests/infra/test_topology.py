"""Table definitions and function plans: the plain data the local cloud shares with CDK."""

from __future__ import annotations

import json

import pytest

from functions.agents import load_all
from infra.config import load_stage
from infra.definitions import IDEMPOTENCY, ORDERS, TABLES, TENANTS, create_table_kwargs, ttl_kwargs
from infra.topology import (
    API_HANDLER,
    AUTHORIZER_HANDLER,
    GATEWAY_ERRORS,
    JobResources,
    api_routes,
    function_plans,
    gateway_error,
)
from infra.topology.streaming import StreamResources


def test_table_definitions() -> None:
    # Other areas add tables after these; each area asserts its own.
    assert [t.name for t in TABLES][:3] == ["tenants", "idempotency", "orders"]
    assert len({t.name for t in TABLES}) == len(TABLES)
    assert (TENANTS.partition_key.name, TENANTS.sort_key) == ("pk", None)
    assert (IDEMPOTENCY.partition_key.name, IDEMPOTENCY.ttl_attribute) == ("id", "expiration")
    assert ORDERS.sort_key is not None
    assert (ORDERS.partition_key.name, ORDERS.sort_key.name) == ("tenant_id", "order_id")


def test_create_table_kwargs_for_boto3() -> None:
    kwargs = create_table_kwargs(ORDERS, "local-orders")
    assert kwargs == {
        "TableName": "local-orders",
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "tenant_id", "AttributeType": "S"},
            {"AttributeName": "order_id", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "tenant_id", "KeyType": "HASH"},
            {"AttributeName": "order_id", "KeyType": "RANGE"},
        ],
    }
    assert ttl_kwargs(TENANTS, "t") is None
    assert ttl_kwargs(IDEMPOTENCY, "i") == {
        "TableName": "i",
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expiration"},
    }


def test_function_plans_and_environment() -> None:
    stage = load_stage("dev")
    plans = {plan.key: plan for plan in function_plans(stage, load_all())}
    assert set(plans) == {"platform", "authorizer", "ingest", "sweeper", "callbacks"} | {
        f"{kind}:{n}" for n in load_all() for kind in ("agent", "worker")
    } | {"release:pre_traffic", "release:post_traffic", "stream", "stream_authorizer"}
    assert plans["authorizer"].handler == AUTHORIZER_HANDLER
    assert plans["platform"].handler == API_HANDLER

    names = {
        "tenants": "t",
        "idempotency": "i",
        "orders": "o",
        "budgets": "b",
        "ledger": "l",
        "usage": "u",
        "limits": "r",
        "reviews": "v",
        "audit": "a",
        "callback_keys": "k",
        "streams": "s",
    }
    stream = StreamResources(callback_url="https://ws/dev", functions={"triage": "fn-triage"})
    env = plans["agent:order_status"].environment(
        table_names=names, model_secret_id="arn:s", stream=stream
    )
    assert env["STRATUS_ORDERS_TABLE"] == "o"
    assert env["STRATUS_IDEMPOTENCY_TABLE"] == "i"
    assert env["STRATUS_MODEL_SECRET_NAME"] == "arn:s"
    assert "STRATUS_TENANTS_TABLE" not in env
    assert set(env) == set(plans["agent:order_status"].env_names)
    assert "STRATUS_ORDERS_TABLE" not in plans["agent:triage"].env_names

    jobs = JobResources(
        queue_urls={f"agent-{n}": f"q-{n}" for n in load_all()}
        | {"ingest-dlq": "dlq", "callbacks": "cbq"},
        topic_arn="arn:topic",
        workflow_arns={"researcher": "arn:sm"},
        callback_secret_id="arn:cb",
    )
    names["jobs"] = "j"
    # The platform embeds a memory search's q: it has the model secret too.
    platform = plans["platform"].environment(table_names=names, jobs=jobs, model_secret_id="arn:s")
    assert json.loads(platform["STRATUS_JOB_QUEUES"])["triage"] == "q-triage"
    assert json.loads(platform["STRATUS_WORKFLOWS"]) == {"researcher": "arn:sm"}
    assert platform["STRATUS_JOBS_TABLE"] == "j"
    worker = plans["worker:triage"].environment(
        table_names=names, model_secret_id="arn:s", jobs=jobs
    )
    assert set(json.loads(worker["STRATUS_JOB_QUEUES"])) == {"order_status", "returns"}
    assert worker["STRATUS_JOBS_TOPIC_ARN"] == "arn:topic"
    assert "STRATUS_WORKFLOWS" not in worker
    assert plans["worker:triage"].timeout_s == stage.job_worker_timeout_s
    # Retries come back on the worker's own queue; callbacks are queued, never signed here.
    assert worker["STRATUS_JOB_QUEUE_URL"] == "q-triage"
    assert worker["STRATUS_CALLBACK_QUEUE_URL"] == "cbq"
    assert "STRATUS_CALLBACK_SECRET_NAME" not in worker
    assert platform["STRATUS_CALLBACK_QUEUE_URL"] == "cbq"
    assert "STRATUS_CALLBACK_SECRET_NAME" not in platform
    callbacks = plans["callbacks"].environment(table_names=names, jobs=jobs)
    assert callbacks["STRATUS_CALLBACK_SECRET_NAME"] == "arn:cb"
    assert callbacks["STRATUS_CALLBACK_QUEUE_URL"] == "cbq"
    assert plans["callbacks"].consumes == "callbacks" and "STRATUS_AGENT" in callbacks
    sweeper = plans["sweeper"].environment(table_names=names, jobs=jobs)
    assert set(json.loads(sweeper["STRATUS_JOB_QUEUES"])) == set(load_all())
    assert sweeper["STRATUS_JOBS_TABLE"] == "j" and not plans["sweeper"].model_secret
    assert set(plans["sweeper"].send_queues) == {f"agent-{n}" for n in load_all()} | {"callbacks"}
    ingest = plans["ingest"].environment(table_names=names, jobs=jobs)
    assert ingest["STRATUS_INGEST_DLQ_URL"] == "dlq"
    with pytest.raises(KeyError, match="job resources"):
        plans["ingest"].environment(table_names=names)
    assert platform["STRATUS_AGENT"] == ""
    assert platform["STRATUS_TENANTS_TABLE"] == "t"
    with pytest.raises(KeyError, match="model secret"):
        plans["agent:triage"].environment(table_names=names)
    with pytest.raises(KeyError, match="orders"):
        plans["agent:order_status"].environment(
            table_names={k: v for k, v in names.items() if k != "orders"}, model_secret_id="s"
        )


def test_routes() -> None:
    routes = api_routes(["triage"])
    assert [(r.method, r.path, r.target, r.authorized) for r in routes] == [
        ("GET", "/v1/health", "platform", False),
        ("GET", "/v1/openapi.json", "platform", False),
        ("GET", "/v1/usage", "platform", True),
        ("POST", "/v1/jobs", "platform", True),
        ("GET", "/v1/jobs/{job_id}", "platform", True),
        ("POST", "/v1/jobs/{job_id}/cancel", "platform", True),
        ("POST", "/v1/jobs/{job_id}/approval", "platform", True),
        ("GET", "/v1/reviews", "platform", True),
        ("GET", "/v1/reviews/{review_id}", "platform", True),
        ("POST", "/v1/reviews/{review_id}", "platform", True),
        ("GET", "/v1/audit", "platform", True),
        ("POST", "/v1/keys", "platform", True),
        ("GET", "/v1/keys", "platform", True),
        ("DELETE", "/v1/keys/{key_id}", "platform", True),
        ("POST", "/v1/keys/{key_id}/rotate", "platform", True),
        ("POST", "/v1/callback-keys/rotate", "platform", True),
        ("POST", "/v1/stream-tickets", "platform", True),
        ("GET", "/v1/memory", "platform", True),
        ("DELETE", "/v1/memory", "platform", True),
        ("DELETE", "/v1/memory/{memory_id}", "platform", True),
        ("POST", "/v1/agents/triage/invoke", "agent:triage", True),
        ("ANY", "/v1/agents/triage/{proxy+}", "agent:triage", True),
        ("ANY", "/v1/agents/{agent}/{proxy+}", "platform", True),
    ]


def test_gateway_errors_are_plain_data() -> None:
    unauthorized = gateway_error("UNAUTHORIZED")
    assert (unauthorized.status, unauthorized.code) == (401, "unauthorized")
    body = gateway_error("BAD_REQUEST_BODY").body("req-1", "input is required")
    assert body == {
        "error": {"code": "validation_error", "message": "input is required", "request_id": "req-1"}
    }
    assert {e.response_type for e in GATEWAY_ERRORS} >= {
        "UNAUTHORIZED",
        "ACCESS_DENIED",
        "MISSING_AUTHENTICATION_TOKEN",
        "REQUEST_TOO_LARGE",
        "BAD_REQUEST_BODY",
        "THROTTLED",
        "INTEGRATION_TIMEOUT",
        "DEFAULT_5XX",
    }
    with pytest.raises(KeyError):
        gateway_error("WAF_FILTERED")


def test_sessions_table_is_granted_only_to_agents_with_sessions() -> None:
    from infra.definitions import SESSIONS

    assert SESSIONS in TABLES
    assert SESSIONS.sort_key is not None
    assert (SESSIONS.partition_key.name, SESSIONS.sort_key.name) == ("sid", "sk")
    assert SESSIONS.ttl_attribute == "expires_at"
    specs = load_all()
    plans = {plan.key: plan for plan in function_plans(load_stage("dev"), specs)}
    with_sessions = {name for name, spec in specs.items() if spec.sessions is not None}
    assert "support" in with_sessions
    for name in specs:
        plan = plans[f"agent:{name}"]
        if name in with_sessions:
            assert plan.tables["sessions"] == "read_write"
            assert "STRATUS_SESSIONS_TABLE" in plan.env_names
        else:
            assert "sessions" not in plan.tables
            assert "STRATUS_SESSIONS_TABLE" not in plan.env_names
    assert "sessions" not in plans["platform"].tables


def test_job_queues_sweep_and_lease_index() -> None:
    from infra.definitions import JOBS
    from infra.topology import SWEEP_INTERVAL_S, queue_plans

    stage = load_stage("dev")
    queues = {plan.name: plan for plan in queue_plans(stage, load_all())}
    callbacks = queues["callbacks"]
    assert (callbacks.consumer, callbacks.max_receive_count) == ("callbacks", 5)
    plans = {plan.key: plan for plan in function_plans(stage, load_all())}
    assert callbacks.visibility_timeout_s == 6 * plans["callbacks"].timeout_s
    assert SWEEP_INTERVAL_S == 60
    (leases,) = JOBS.indexes
    assert leases.name == "leases" and leases.partition_key.name == "lease_shard"
    assert leases.sort_key is not None and (leases.sort_key.name, leases.sort_key.type) == (
        "lease_until",
        "N",
    )
    kwargs = create_table_kwargs(JOBS, "j")
    assert kwargs["GlobalSecondaryIndexes"][0]["IndexName"] == "leases"


def test_review_sampling_reaches_every_function_that_answers() -> None:
    stage = load_stage("dev")
    plans = {plan.key: plan for plan in function_plans(stage, load_all())}
    for key, plan in plans.items():
        answers = plan.kind in ("agent", "worker")
        # Whoever answers may only write reviews; the platform grades and reads them.
        expected = "write" if answers else "read_write" if key == "platform" else None
        assert plan.tables.get("reviews") == expected, key
        if answers:
            assert plan.static_env["STRATUS_REVIEW_SAMPLE_RATE"] == "1.0"  # dev: every answer
            assert json.loads(plan.static_env["STRATUS_REVIEW_SAMPLE_RATES"]) == {}
    assert load_stage("prod").review_sample_rate == 0.05
    overridden = stage.model_copy(
        update={"review_sample_rates": {"triage": 0.5}, "review_sample_rate_canary": 0.2}
    )
    env = next(p for p in function_plans(overridden, load_all()) if p.key == "worker:triage")
    assert json.loads(env.static_env["STRATUS_REVIEW_SAMPLE_RATES"]) == {"triage": 0.5}
    assert env.static_env["STRATUS_REVIEW_SAMPLE_RATE_CANARY"] == "0.2"
    typo = stage.model_copy(update={"review_sample_rates": {"triag": 0.5}})
    with pytest.raises(ValueError, match="triag"):
        function_plans(typo, load_all())

"""Names and values every plan shares: handlers, variables, tables, queue names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from infra.config import StageConfig
from infra.definitions import (
    AUDIT,
    BUDGETS,
    CALLBACK_KEYS,
    IDEMPOTENCY,
    JOBS,
    LEDGER,
    LIMITS,
    ORDERS,
    REVIEWS,
    SESSIONS,
    STREAMS,
    TENANTS,
    USAGE,
)
from infra.paths import REPO_ROOT
from stratus.agents import Resource

API_HANDLER = "functions.handlers.api.lambda_handler"
AUTHORIZER_HANDLER = "functions.handlers.authorizer.lambda_handler"
WORKER_HANDLER = "functions.handlers.worker.lambda_handler"
INGEST_HANDLER = "functions.handlers.ingest.lambda_handler"
SWEEPER_HANDLER = "functions.handlers.sweeper.lambda_handler"
CALLBACKS_HANDLER = "functions.handlers.callbacks.lambda_handler"
#: The agent release a function serves (``stratus.releases``), and a hook's gate policy.
RELEASE_ENV = "STRATUS_RELEASE"
RELEASE_GATE_ENV = "STRATUS_RELEASE_GATE"
MODEL_SECRET_ENV = "STRATUS_MODEL_SECRET_NAME"  # noqa: S105 - a variable name
JOB_QUEUES_ENV = "STRATUS_JOB_QUEUES"
JOBS_TOPIC_ENV = "STRATUS_JOBS_TOPIC_ARN"
WORKFLOWS_ENV = "STRATUS_WORKFLOWS"
CALLBACK_SECRET_ENV = "STRATUS_CALLBACK_SECRET_NAME"  # noqa: S105 - a variable name
INGEST_QUEUE = "ingest"
#: Callback deliveries: finishing a job enqueues one; the callbacks function posts it.
CALLBACK_QUEUE = "callbacks"
CALLBACK_QUEUE_ENV = "STRATUS_CALLBACK_QUEUE_URL"
WORKFLOWS_DIR = REPO_ROOT / "infra" / "workflows"

FunctionKind = Literal[
    "agent", "platform", "authorizer", "worker", "ingest", "sweeper", "callbacks", "release_hook"
]
#: ``start`` starts executions; ``respond`` answers task tokens and stops executions.
WorkflowAccess = Literal["start", "respond"]
#: ``describe`` is DescribeTable only: what a health check needs, nothing more;
#: ``write`` is item writes only (PutItem, UpdateItem, ...): what review sampling needs.
TableAccess = Literal["read", "read_write", "write", "describe"]

#: Every function logs, traces and emits metrics under one service name.
POWERTOOLS_ENV: Mapping[str, str] = {
    "POWERTOOLS_SERVICE_NAME": "stratus",
    "POWERTOOLS_METRICS_NAMESPACE": "Stratus",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    # Model outputs may hold customer data and exceed X-Ray's 64 KB segment limit.
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
}

#: What each agent resource (``AgentSpec.resources``) means for the stack: the
#: table it is, and the access its tools need. A new resource kind fails loudly.
AGENT_RESOURCES: Mapping[Resource, tuple[str, TableAccess]] = {
    "orders_table": (ORDERS.name, "read"),
}

#: Table logical name -> the variable that carries its physical name.
TABLE_ENV: Mapping[str, str] = {
    t.name: t.env_var
    for t in (
        *(TENANTS, IDEMPOTENCY, ORDERS, JOBS, SESSIONS, BUDGETS, LEDGER, USAGE, LIMITS, REVIEWS),
        AUDIT,
        CALLBACK_KEYS,
        STREAMS,
    )
}

#: What every function that calls a model needs: the model gateway's tables.
GATEWAY_TABLES: Mapping[str, TableAccess] = {
    BUDGETS.name: "read_write",
    LEDGER.name: "read_write",
    USAGE.name: "read_write",
    LIMITS.name: "read_write",
}


#: Functions that produce answers queue a share of them for human review: writes only.
REVIEW_SAMPLING_TABLES: Mapping[str, TableAccess] = {REVIEWS.name: "write"}


def review_sampling_env(stage: StageConfig) -> dict[str, str]:
    """The stage's review shares (every agent, per-agent overrides, the canary hook)."""
    env = {
        "STRATUS_REVIEW_SAMPLE_RATE": str(stage.review_sample_rate),
        "STRATUS_REVIEW_SAMPLE_RATES": json.dumps(stage.review_sample_rates, sort_keys=True),
        "STRATUS_REVIEW_RETENTION_DAYS": str(stage.review_retention_days),
    }
    if stage.review_sample_rate_canary is not None:
        env["STRATUS_REVIEW_SAMPLE_RATE_CANARY"] = str(stage.review_sample_rate_canary)
    return env


#: Functions that record audit events (stratus.audit): item writes only; the platform
#: function also reads (GET /v1/audit).
AUDIT_TABLES: Mapping[str, TableAccess] = {AUDIT.name: "write"}


def fairness_env(stage: StageConfig) -> dict[str, str]:
    """The stage's tenant request rate and queued-job cap (:mod:`stratus.tenant_limits`),
    only those set (unset: no default limit; a tenant's own limits still apply)."""
    values = {
        "STRATUS_TENANT_RATE_LIMIT_RPS": stage.tenant_rate_limit_rps,
        "STRATUS_TENANT_RATE_LIMIT_BURST": stage.tenant_rate_limit_burst,
        "STRATUS_MAX_QUEUED_JOBS": stage.max_queued_jobs,
    }
    return {name: str(value) for name, value in values.items() if value is not None}


def audit_env(stage: StageConfig) -> dict[str, str]:
    """How long the stage keeps audit events (the TTL each item carries)."""
    return {"STRATUS_AUDIT_RETENTION_DAYS": str(stage.audit_retention_days)}


#: The ingest function's timeout; its queue's visibility timeout is 6x this.
INGEST_TIMEOUT_S = 30
#: The callbacks function's timeout (a batch of 5 posts of at most 5 s each, in turn).
CALLBACKS_TIMEOUT_S = 60
CALLBACKS_BATCH_SIZE = 5
#: Attempts of one callback delivery before it is recorded failed and dead-lettered.
CALLBACK_MAX_RECEIVE_COUNT = 5
#: The lease sweep: its function's timeout, and its schedule (EventBridge; the local
#: cloud runs the same function every ``SWEEP_INTERVAL_S``).
SWEEPER_TIMEOUT_S = 60
SWEEP_INTERVAL_S = 60


def pascal(name: str) -> str:
    """``snake_case`` -> ``PascalCase``, for construct ids."""
    return "".join(part.capitalize() for part in name.split("_"))


def alerts_topic_name(stage: StageConfig) -> str:
    """The budget alerts topic: named, so functions know it before deployment."""
    return f"stratus-{stage.name}-budget-alerts"


def agent_queue(agent: str) -> str:
    """The logical name of an agent's job queue (its DLQ is ``<name>-dlq``)."""
    return f"agent-{agent}"


def dlq(queue: str) -> str:
    return f"{queue}-dlq"

"""Job contracts: statuses, request and view models, the producer contract and its parser.

Everything here is pure: no I/O, no clock other than the one passed in. The
JSON schema of producer contract v1 (``events/producer/contract-v1.schema.json``)
is generated from :class:`ProducerMessage`; a test keeps the two equal.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stratus.agents import CallScope
from stratus.contracts import MAX_IDEMPOTENCY_KEY_LEN, MAX_JSON_DEPTH, json_too_deep
from stratus.errors import InputTooLarge, JobBudgetExceeded
from stratus.usage import Usage

JobStatus = Literal["queued", "running", "waiting_approval", "succeeded", "failed", "cancelled"]
FinalStatus = Literal["succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"queued", "running", "waiting_approval"})
JOB_SK = "JOB"
STEP_PREFIX = "STEP#"
AGENT_NAME = r"^[a-z][a-z0-9_]{1,39}$"
#: The producer contract versions this deployment accepts.
PRODUCER_VERSIONS = ("1",)

JsonObject = dict[str, Any]
Clock = Callable[[], float]


#: The smallest accepted ``max_cost_usd`` (one micro-dollar).
MIN_JOB_COST_CAP_USD = 0.000001


class _JobFields(BaseModel):
    agent: str = Field(pattern=AGENT_NAME, description="The agent that runs the job.")
    input: str | JsonObject = Field(description="The user's message, or a JSON object.")
    metadata: JsonObject = Field(default_factory=dict, description="Opaque; kept on the job.")
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+",
        description="POSTed the completion event, signed with X-Stratus-Signature (http/https).",
    )
    #: At least a micro-dollar (DynamoDB numbers stop at 1E-130; a smaller cap is no cap),
    #: strict: JSON true/false and numeric strings are not amounts.
    max_cost_usd: float | None = Field(
        default=None,
        ge=MIN_JOB_COST_CAP_USD,
        le=10_000,
        strict=True,
        description="Per-job cost cap in USD (at least 0.000001), checked before each step.",
    )
    route: bool = Field(
        default=False,
        description="Let the agent's decision hand the job to a specialized agent (triage).",
    )
    require_approval: bool = Field(
        default=False, description="Workflows only: wait for POST /approval before completing."
    )

    @field_validator("callback_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/?#]+", value):
            raise ValueError("callback_url must be an http:// or https:// URL")
        return value


class JobRequest(_JobFields):
    """Body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")


class ProducerMessage(_JobFields):
    """Producer contract v1: one SQS message on the ingest queue is one job."""

    model_config = ConfigDict(extra="forbid", title="StratusProducerMessageV1")

    version: Literal["1"] = Field(description="Contract version; always the string '1'.")
    tenant_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LEN,
        description="The same key (per tenant) always names the same job. Default: message id.",
    )

    def request(self) -> JobRequest:
        return JobRequest.model_validate(
            self.model_dump(exclude={"version", "tenant_id", "idempotency_key"})
        )


def producer_contract_schema() -> dict[str, Any]:
    """The published JSON schema of producer contract v1 (``events/producer/``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "producer-contract-v1.schema.json",
        **ProducerMessage.model_json_schema(),
        "description": (
            "Stratus producer contract v1: the JSON body of one SQS message on the ingest "
            "queue; one message is one job. Unknown fields are refused."
        ),
    }


class PoisonMessage(Exception):
    """A message that can never become a job; ``reason`` is its stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_producer_message(body: str) -> ProducerMessage:
    """The message, or :class:`PoisonMessage` (``invalid_json``, also for JSON nested too
    deeply, ``invalid_message``, ``unsupported_version``) saying why it can never become
    a job."""
    if json_too_deep(body):
        raise PoisonMessage("invalid_json", f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise PoisonMessage("invalid_json", str(exc)) from None
    if not isinstance(raw, dict):
        raise PoisonMessage("invalid_message", "the body must be a JSON object")
    if str(raw.get("version")) not in PRODUCER_VERSIONS:
        raise PoisonMessage(
            "unsupported_version",
            f"version {raw.get('version')!r}; supported: {', '.join(PRODUCER_VERSIONS)}",
        )
    try:
        return ProducerMessage.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise PoisonMessage("invalid_message", problems) from None


class JobMessage(BaseModel):
    """What the platform and ingest put on an agent's queue: a pointer to the job record."""

    model_config = ConfigDict(extra="forbid")

    version: Literal["1"] = "1"
    job_id: str
    tenant_id: str
    agent: str


class JobSubmitted(BaseModel):
    job_id: str
    status: JobStatus


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved: bool
    comment: str = Field(default="", max_length=2000)


class StepView(BaseModel):
    name: str
    status: str
    usage: Usage
    cost_usd: float
    model: str | None = None
    updated_at: str


class CallbackStatus(BaseModel):
    """The delivery of a job's callback (``state``: pending, retrying, delivered, failed,
    refused)."""

    state: str
    attempts: int = 0
    last_status: int | None = None
    delivered_at: str | None = None
    error: str | None = None


class ApprovalView(BaseModel):
    """The answer to a job's approval: who gave it (the approving key), when, and why."""

    approved: bool
    #: The key id of the approver (None: answered before approvals were recorded).
    by: str | None = None
    comment: str = ""
    at: str | None = None


class JobView(BaseModel):
    """Body of ``GET /v1/jobs/{job_id}``."""

    job_id: str
    agent: str
    status: JobStatus
    result: Any = None
    error: JsonObject | None = None
    usage: Usage
    cost_usd: float
    created_at: str
    updated_at: str
    metadata: JsonObject = Field(default_factory=dict)
    attempts: int = 0
    parent_job_id: str | None = None
    routed_to: JsonObject | None = None
    callback: CallbackStatus | None = None
    steps: list[StepView] | None = None
    release: str | None = Field(
        default=None, description="The release of the agent that ran the job (null: not yet)."
    )
    prompt_version: str | None = Field(
        default=None, description="The prompt version that ran the job (null: not yet)."
    )
    approval: ApprovalView | None = Field(
        default=None, description="The approval's answer (null: none asked or not yet)."
    )
    correlation_id: str | None = Field(
        default=None,
        description="The request's X-Correlation-Id (or the generated one); child jobs inherit it.",
    )


# -- helpers --------------------------------------------------------------------------


def dump_json(value: Any) -> str:
    """JSON as stored on job items: sorted keys, non-ASCII text as is (not ``\\uXXXX``)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def check_input(request: JobRequest, *, max_input_chars: int | None, max_bytes: int) -> None:
    """Refuse at submission what the agent's runner (or DynamoDB) would refuse later.

    Characters are counted as the runner counts them (``limits.max_input_chars``);
    bytes are the UTF-8 JSON of input and metadata as stored.
    """
    raw = request.input
    text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)
    if max_input_chars is not None and len(text) > max_input_chars:
        raise InputTooLarge(
            f"input is {len(text)} characters; agent {request.agent} accepts at most "
            f"{max_input_chars}",
            details={"limit": max_input_chars, "size": len(text), "unit": "characters"},
        )
    size = len(dump_json(request.input).encode()) + len(dump_json(request.metadata).encode())
    if size > max_bytes:
        raise InputTooLarge(
            f"input and metadata are {size} bytes; a job accepts at most {max_bytes}",
            details={"limit": max_bytes, "size": size, "unit": "bytes"},
        )


def now_iso(clock: Clock = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds")


def job_id_for(tenant_id: str, idempotency_key: str | None) -> str:
    """A new random id, or the id the (tenant, key) pair always maps to."""
    if idempotency_key is None:
        return "job_" + uuid.uuid4().hex
    digest = hashlib.sha256(f"{tenant_id}\n{idempotency_key}".encode()).hexdigest()
    return "job_" + digest[:32]


def request_hash(request: JobRequest) -> str:
    body = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def usage_of(item: Mapping[str, Any], prefix: str = "") -> Usage:
    return Usage(
        input_tokens=int(item.get(f"{prefix}input_tokens", 0)),
        cached_input_tokens=int(item.get(f"{prefix}cached_input_tokens", 0)),
        output_tokens=int(item.get(f"{prefix}output_tokens", 0)),
        reasoning_tokens=int(item.get(f"{prefix}reasoning_tokens", 0)),
    )


def check_budget(job: Mapping[str, Any], scope: CallScope | None = None) -> None:
    """Refuse to start a costly step once the job has spent its ``max_cost_usd``.

    Only the per-job cap is enforced here; the model gateway enforces the
    tenant/agent budgets of the ledger on each call.
    """
    cap = job.get("max_cost_usd")
    spent = Decimal(str(job.get("cost_usd", 0)))
    if cap is not None and spent >= Decimal(str(cap)):
        raise JobBudgetExceeded(
            f"job {job['job_id']} has spent ${spent} of its ${cap} cap",
            details={
                "max_cost_usd": float(cap),
                "cost_usd": float(spent),
                "step": scope.step if scope else None,
            },
        )


def view(job: Mapping[str, Any], steps: Iterable[Mapping[str, Any]] | None = None) -> JobView:
    result = json.loads(job["result"]) if job.get("result") else None
    step_views = None
    if steps is not None:
        step_views = [
            StepView(
                name=str(s["sk"]).removeprefix(STEP_PREFIX),
                status=str(s.get("status", "")),
                usage=usage_of(s),
                cost_usd=float(s.get("cost_usd", 0)),
                model=s.get("model"),
                updated_at=str(s.get("updated_at", "")),
            )
            for s in steps
        ]
    return JobView(
        job_id=job["job_id"],
        agent=job["agent"],
        status=job["status"],
        result=result,
        error=dict(job["error"]) if job.get("error") else None,
        usage=usage_of(job),
        cost_usd=float(job.get("cost_usd", 0)),
        created_at=job["created_at"],
        updated_at=job["updated_at"],
        metadata=json.loads(job.get("metadata") or "{}"),
        attempts=int(job.get("attempts", 0)),
        parent_job_id=job.get("parent_job_id"),
        routed_to=dict(job["routed_to"]) if job.get("routed_to") else None,
        callback=_callback_status(job.get("callback")),
        steps=step_views,
        release=job.get("release"),
        prompt_version=job.get("prompt_version"),
        approval=_approval(job.get("approval")),
        correlation_id=job.get("correlation_id"),
    )


def _approval(raw: Any) -> ApprovalView | None:
    if not isinstance(raw, Mapping) or "approved" not in raw:
        return None
    return ApprovalView(
        approved=bool(raw["approved"]),
        by=raw.get("by"),
        comment=str(raw.get("comment") or ""),
        at=raw.get("at"),
    )


def _callback_status(raw: Any) -> CallbackStatus | None:
    if not isinstance(raw, Mapping) or "state" not in raw:
        return None
    last = raw.get("last_status")
    return CallbackStatus(
        state=str(raw["state"]),
        attempts=int(raw.get("attempts", 0)),
        last_status=int(last) if last is not None else None,
        delivered_at=raw.get("delivered_at"),
        error=raw.get("error"),
    )


def job_input(job: Mapping[str, Any]) -> str | JsonObject:
    value: str | JsonObject = json.loads(job["input"])
    return value


def job_metadata(job: Mapping[str, Any]) -> JsonObject:
    value: JsonObject = json.loads(job.get("metadata") or "{}")
    return value

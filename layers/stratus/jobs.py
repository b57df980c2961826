"""Asynchronous jobs: contracts, the job store (DynamoDB), submission and completion.

A job is one item (``sk = JOB``) in the jobs table plus one item per step
(``sk = STEP#<name>``), so no item grows with the work done. Every state change
is a conditional write, which is what makes the worker idempotent:

* ``queued -> running`` happens under a *lease* (``lease_until``): a redelivered
  message finds the job running under a live lease and is retried later, or finds
  it finished and is acknowledged without running anything twice;
* a step's usage and cost are added to the job in the same transaction that
  records the step, and only if the step was not recorded before;
* ``running -> succeeded|failed`` only succeeds once, and only the writer that
  won it publishes the completion event (``notified`` marks that it did).

Job ids are random, or derived from (tenant, ``Idempotency-Key``) so that the same
key always names the same job. Another tenant's job is indistinguishable from a
missing one (404).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stratus import aws
from stratus.agents import CallScope
from stratus.config import Settings
from stratus.contracts import MAX_IDEMPOTENCY_KEY_LEN
from stratus.errors import (
    ConfigurationError,
    IdempotencyKeyReused,
    JobBudgetExceeded,
    JobNotFound,
    ValidationFailed,
)
from stratus.observability import logger
from stratus.usage import Usage

JobStatus = Literal["queued", "running", "waiting_approval", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"queued", "running", "waiting_approval"})
JOB_SK = "JOB"
STEP_PREFIX = "STEP#"
AGENT_NAME = r"^[a-z][a-z0-9_]{1,39}$"
#: The producer contract versions this deployment accepts.
PRODUCER_VERSIONS = ("1",)
SIGNATURE_HEADER = "X-Stratus-Signature"
CALLBACK_TIMEOUT_S = 5.0

JsonObject = dict[str, Any]


# -- contracts ------------------------------------------------------------------------


class _JobFields(BaseModel):
    agent: str = Field(pattern=AGENT_NAME, description="The agent that runs the job.")
    input: str | JsonObject = Field(description="The user's message, or a JSON object.")
    metadata: JsonObject = Field(default_factory=dict, description="Opaque; kept on the job.")
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="POSTed the completion event, signed with X-Stratus-Signature (http/https).",
    )
    max_cost_usd: float | None = Field(
        default=None, gt=0, le=10_000, description="Per-job cost cap, checked before each step."
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


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead a checked public URL to an internal address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def public_destination(url: str) -> bool:
    """True if every address ``url``'s host resolves to is a public (global) one.

    Loopback, private, link-local (instance metadata), shared and reserved ranges
    are refused. The check runs right before sending; redirects are not followed.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    return bool(addresses) and all(address.is_global for address in addresses)


class JobRequest(_JobFields):
    """Body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")


class ProducerMessage(_JobFields):
    """Producer contract v1: one SQS message on the ingest queue is one job.

    The JSON schema is ``events/sqs/producer-contract-v1.schema.json`` (generated
    from this model; a test keeps the two equal).
    """

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
    """The published JSON schema of producer contract v1 (``events/sqs/``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "producer-contract-v1.schema.json",
        **ProducerMessage.model_json_schema(),
        "description": (
            "Stratus producer contract v1: the JSON body of one SQS message on the ingest "
            "queue; one message is one job. Unknown fields are refused."
        ),
    }


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
    steps: list[StepView] | None = None


# -- helpers --------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def job_id_for(tenant_id: str, idempotency_key: str | None) -> str:
    """A new random id, or the id the (tenant, key) pair always maps to."""
    if idempotency_key is None:
        return "job_" + uuid.uuid4().hex
    digest = hashlib.sha256(f"{tenant_id}\n{idempotency_key}".encode()).hexdigest()
    return "job_" + digest[:32]


def request_hash(request: JobRequest) -> str:
    body = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Stratus-Signature`` value: ``t=<unix ts>,v1=<hex HMAC-SHA256(key, "t.body")>``."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(key: bytes, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """Check a callback signature (what a receiver does); rejects stale timestamps."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, timestamp, body), header)


def usage_of(item: Mapping[str, Any], prefix: str = "") -> Usage:
    return Usage(
        input_tokens=int(item.get(f"{prefix}input_tokens", 0)),
        cached_input_tokens=int(item.get(f"{prefix}cached_input_tokens", 0)),
        output_tokens=int(item.get(f"{prefix}output_tokens", 0)),
        reasoning_tokens=int(item.get(f"{prefix}reasoning_tokens", 0)),
    )


def check_budget(job: Mapping[str, Any], scope: CallScope | None = None) -> None:
    """Refuse to start a costly step once the job has spent its ``max_cost_usd``.

    The hook for the tenant/agent budget ledger (issue 6): when that lands, reserve
    the step's worst case here under ``scope`` as well; today only the per-job cap
    is enforced (the model client enforces the ledger budgets on each call).
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
        steps=step_views,
    )


def job_input(job: Mapping[str, Any]) -> str | JsonObject:
    value: str | JsonObject = json.loads(job["input"])
    return value


def _conditional_failed(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


# -- the store ------------------------------------------------------------------------


class JobStore:
    """The jobs table; every transition is a conditional write."""

    def __init__(self, table_name: str, *, retention_days: int = 30) -> None:
        if not table_name:
            raise ConfigurationError("STRATUS_JOBS_TABLE is not set")
        self.table_name = table_name
        self.retention_s = retention_days * 24 * 3600

    @property
    def _table(self) -> Any:
        return aws.table(self.table_name)

    def _expires(self) -> int:
        return int(time.time()) + self.retention_s

    def create(
        self,
        *,
        job_id: str,
        tenant_id: str,
        request: JobRequest,
        source: str,
        idempotency_key: str | None = None,
        parent_job_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Put a new queued job; if the id exists, return the existing job instead.

        The same id with a different request (same Idempotency-Key, other body) is
        refused, as for synchronous invokes.
        """
        stamp = now_iso()
        item: dict[str, Any] = {
            "job_id": job_id,
            "sk": JOB_SK,
            "tenant_id": tenant_id,
            "agent": request.agent,
            "status": "queued",
            "input": json.dumps(request.input, sort_keys=True),
            "metadata": json.dumps(request.metadata, sort_keys=True),
            "route": request.route,
            "require_approval": request.require_approval,
            "request_hash": request_hash(request),
            "source": source,
            "cost_usd": Decimal(0),
            "attempts": 0,
            "lease_until": 0,
            "created_at": stamp,
            "updated_at": stamp,
            "expires_at": self._expires(),
        }
        if request.callback_url:
            item["callback_url"] = request.callback_url
        if request.max_cost_usd is not None:
            item["max_cost_usd"] = Decimal(str(request.max_cost_usd))
        if idempotency_key is not None:
            item["idempotency_key"] = idempotency_key
        if parent_job_id is not None:
            item["parent_job_id"] = parent_job_id
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(job_id)")
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            existing = self.get(job_id)
            if existing is None or existing["tenant_id"] != tenant_id:
                raise  # cannot happen: the id is derived from the tenant
            if existing.get("request_hash") != item["request_hash"]:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used with a different job request"
                ) from None
            return existing, False
        return item, True

    def get(self, job_id: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._table.get_item(
            Key={"job_id": job_id, "sk": JOB_SK}, ConsistentRead=True
        ).get("Item")
        return item

    def get_for_tenant(self, job_id: str, tenant_id: str) -> dict[str, Any]:
        job = self.get(job_id) if job_id.startswith("job_") and len(job_id) <= 64 else None
        if job is None or job["tenant_id"] != tenant_id:
            raise JobNotFound(f"no job {job_id!r}", details={"job_id": job_id})
        return job

    def steps(self, job_id: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.conditions import Key

        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("job_id").eq(job_id) & Key("sk").begins_with(STEP_PREFIX),
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _update(
        self, job_id: str, *, set_: Mapping[str, Any], condition: str, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """SET the fields if ``condition`` holds; the new item, or None if it did not."""
        fields = {**set_, "updated_at": now_iso()}
        names = {f"#{k}": k for k in fields}
        names["#status"] = "status"
        expression = "SET " + ", ".join(f"#{k} = :{k}" for k in fields)
        attr_values = {f":{k}": v for k, v in fields.items()} | dict(values)
        try:
            response = self._table.update_item(
                Key={"job_id": job_id, "sk": JOB_SK},
                UpdateExpression=expression,
                ConditionExpression=f"attribute_exists(job_id) AND ({condition})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attr_values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        item: dict[str, Any] = response["Attributes"]
        return item

    def claim(self, job_id: str, lease_s: float) -> dict[str, Any] | None:
        """queued -> running under a lease, or take over a running job whose lease expired."""
        now = Decimal(str(round(time.time(), 3)))
        job = self.get(job_id)
        attempts = int(job.get("attempts", 0)) + 1 if job else 1
        return self._update(
            job_id,
            set_={
                "status": "running",
                "lease_until": now + Decimal(str(round(lease_s, 3))),
                "attempts": attempts,
            },
            condition="#status = :queued OR (#status = :running AND lease_until < :now)",
            values={":queued": "queued", ":running": "running", ":now": now},
        )

    def release(self, job_id: str) -> None:
        """Drop the lease of a running job (a handled, retryable failure): retry at once."""
        self._update(
            job_id,
            set_={"lease_until": 0},
            condition="#status = :running",
            values={":running": "running"},
        )

    def set_execution(self, job_id: str, execution_arn: str) -> dict[str, Any] | None:
        return self._update(
            job_id,
            set_={"execution_arn": execution_arn, "lease_until": 0},
            condition="#status = :running",
            values={":running": "running"},
        )

    def await_approval(self, job_id: str, task_token: str) -> dict[str, Any] | None:
        return self._update(
            job_id,
            set_={"status": "waiting_approval", "task_token": task_token},
            condition="#status = :running",
            values={":running": "running"},
        )

    def answer_approval(self, job_id: str, approved: bool, comment: str) -> dict[str, Any] | None:
        """waiting_approval -> running, once: only one answer reaches the workflow."""
        return self._update(
            job_id,
            set_={
                "status": "running",
                "task_token": "",
                "approval": {"approved": approved, "comment": comment, "at": now_iso()},
            },
            condition="#status = :waiting",
            values={":waiting": "waiting_approval"},
        )

    def finish(
        self,
        job_id: str,
        status: Literal["succeeded", "failed", "cancelled"],
        *,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        from_statuses: Iterable[str] = ("running", "waiting_approval"),
    ) -> dict[str, Any] | None:
        """Move an active job to a final status; None if it already left those statuses."""
        fields: dict[str, Any] = {"status": status, "lease_until": 0, **(extra or {})}
        if result is not None:
            fields["result"] = json.dumps(result, sort_keys=True, default=str)
        if error is not None:
            fields["error"] = dict(error)
        allowed = sorted(set(from_statuses))
        values = {f":from{i}": s for i, s in enumerate(allowed)}
        condition = " OR ".join(f"#status = :from{i}" for i in range(len(allowed)))
        return self._update(job_id, set_=fields, condition=condition, values=values)

    def mark_notified(self, job_id: str) -> None:
        self._update(
            job_id, set_={"notified": True}, condition="attribute_exists(#status)", values={}
        )

    def record_step(
        self,
        job_id: str,
        step: str,
        *,
        usage: Usage,
        cost_usd: Decimal,
        model: str | None = None,
        output: Any = None,
    ) -> bool:
        """Record a finished step and add its usage and cost to the job, once.

        A retried step (SQS redelivery, Step Functions retry) that was already
        recorded adds nothing: the transaction's condition fails and False is returned.
        """
        stamp = now_iso()
        step_item: dict[str, Any] = {
            "job_id": job_id,
            "sk": STEP_PREFIX + step,
            "status": "succeeded",
            "cost_usd": cost_usd,
            "updated_at": stamp,
            "expires_at": self._expires(),
            **usage.model_dump(),
        }
        if model:
            step_item["model"] = model
        if output is not None:
            step_item["output"] = json.dumps(output, sort_keys=True, default=str)
        client = self._table.meta.client
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": step_item,
                            "ConditionExpression": "attribute_not_exists(sk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {"job_id": job_id, "sk": JOB_SK},
                            "UpdateExpression": (
                                "ADD cost_usd :cost, input_tokens :in, cached_input_tokens :ca, "
                                "output_tokens :out, reasoning_tokens :re SET updated_at = :now"
                            ),
                            "ConditionExpression": "attribute_exists(job_id)",
                            "ExpressionAttributeValues": {
                                ":cost": cost_usd,
                                ":in": usage.input_tokens,
                                ":ca": usage.cached_input_tokens,
                                ":out": usage.output_tokens,
                                ":re": usage.reasoning_tokens,
                                ":now": stamp,
                            },
                        }
                    },
                ]
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                logger.info("step already recorded", extra={"job_id": job_id, "step": step})
                return False
            raise
        return True

    def step_output(self, job_id: str, step: str) -> Any:
        item = self._table.get_item(
            Key={"job_id": job_id, "sk": STEP_PREFIX + step}, ConsistentRead=True
        ).get("Item")
        if not item or "output" not in item:
            return None
        return json.loads(item["output"])


def tenant_is_active(tenants_table: str, tenant_id: str) -> bool:
    item = (
        aws.table(tenants_table)
        .get_item(Key={"pk": f"TENANT#{tenant_id}"}, ConsistentRead=True)
        .get("Item")
    )
    return bool(item) and item.get("status") == "active"


# -- submission -----------------------------------------------------------------------


class JobQueues:
    """Sends job messages to the agents' queues (``STRATUS_JOB_QUEUES``)."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self.urls = dict(urls)

    def knows(self, agent: str) -> bool:
        return agent in self.urls

    def send(self, job: Mapping[str, Any]) -> None:
        agent = job["agent"]
        if agent not in self.urls:
            raise ConfigurationError(f"no job queue for agent {agent!r}")
        message = JobMessage(job_id=job["job_id"], tenant_id=job["tenant_id"], agent=agent)
        aws.client("sqs").send_message(
            QueueUrl=self.urls[agent],
            MessageBody=message.model_dump_json(),
            MessageAttributes={
                "tenant_id": {"DataType": "String", "StringValue": job["tenant_id"]},
                "job_id": {"DataType": "String", "StringValue": job["job_id"]},
            },
        )


class JobService:
    """Submits jobs (HTTP and ingest): record first, then enqueue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore(settings.jobs_table, retention_days=settings.job_retention_days)
        self.queues = JobQueues(settings.job_queues)

    def submit(
        self,
        request: JobRequest,
        *,
        tenant_id: str,
        idempotency_key: str | None,
        source: str,
        parent_job_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create (or find) the job and make sure its message is on the agent's queue.

        The record is written before the message is sent: a crash in between
        leaves a queued job whose retry (same key, or the redelivered ingest
        message) sends it again. A repeat while the job is still queued sends the
        message again too; the worker's conditional claim makes that harmless.
        """
        if idempotency_key is not None and (
            not idempotency_key.strip() or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LEN
        ):
            raise ValidationFailed(
                f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters",
                details={"field": "Idempotency-Key"},
            )
        if not self.queues.knows(request.agent):
            from stratus.errors import AgentNotFound

            raise AgentNotFound(
                f"no agent named {request.agent!r}", details={"agent": request.agent}
            )
        job, created = self.store.create(
            job_id=job_id_for(tenant_id, idempotency_key),
            tenant_id=tenant_id,
            request=request,
            source=source,
            idempotency_key=idempotency_key,
            parent_job_id=parent_job_id,
        )
        if job["status"] == "queued":
            self.queues.send(job)
        logger.info(
            "job submitted",
            extra={
                "job_id": job["job_id"],
                "tenant_id": tenant_id,
                "agent": request.agent,
                "new_job": created,
                "source": source,
            },
        )
        return job, created


# -- completion -----------------------------------------------------------------------


class Notifier:
    """Announces finished jobs: an SNS event, and a signed POST to the callback URL."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def _key(self) -> bytes | None:
        if not self.settings.callback_secret_name:
            return None
        raw = aws.client("secretsmanager").get_secret_value(
            SecretId=self.settings.callback_secret_name
        )["SecretString"]
        key = json.loads(raw).get("key", "")
        if not key:
            raise ConfigurationError("the callback secret has no 'key'")
        return str(key).encode()

    def event(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "version": "1",
            "type": f"job.{job['status']}",
            "tenant_id": job["tenant_id"],
            "job": view(job).model_dump(mode="json"),
        }

    def job_finished(self, job: Mapping[str, Any], store: JobStore) -> None:
        """Publish and call back; failures are logged, never raised (the job is done)."""
        event = self.event(job)
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        delivered = True
        if self.settings.jobs_topic_arn:
            try:
                aws.client("sns").publish(
                    TopicArn=self.settings.jobs_topic_arn,
                    Message=body.decode(),
                    MessageAttributes={
                        "type": {"DataType": "String", "StringValue": event["type"]},
                        "tenant_id": {"DataType": "String", "StringValue": job["tenant_id"]},
                        "agent": {"DataType": "String", "StringValue": job["agent"]},
                    },
                )
            except Exception:
                delivered = False
                logger.exception("publishing the job event failed", extra={"job_id": job["job_id"]})
        if job.get("callback_url"):
            self._callback(str(job["callback_url"]), job, body)
        if delivered:
            store.mark_notified(job["job_id"])

    def _callback(self, url: str, job: Mapping[str, Any], body: bytes) -> None:
        if not url.startswith(("http://", "https://")):
            return
        if not self.settings.callback_allow_private and not public_destination(url):
            # A tenant must not make our functions call internal addresses (SSRF).
            logger.warning(
                "callback refused: the URL resolves to a non-public address",
                extra={"job_id": job["job_id"]},
            )
            return
        try:
            key = self._key
        except Exception:
            logger.exception("the callback key could not be read", extra={"job_id": job["job_id"]})
            return
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stratus-jobs/1",
            "X-Stratus-Event": f"job.{job['status']}",
            "X-Stratus-Job-Id": str(job["job_id"]),
        }
        if key is not None:
            headers[SIGNATURE_HEADER] = sign(key, int(time.time()), body)
        for attempt in (1, 2):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked
            try:
                with _NO_REDIRECTS.open(request, timeout=CALLBACK_TIMEOUT_S) as response:
                    response.read()
                logger.info("callback delivered", extra={"job_id": job["job_id"]})
                return
            except (urllib.error.URLError, OSError) as exc:
                logger.warning(
                    "callback failed",
                    extra={"job_id": job["job_id"], "attempt": attempt, "error": str(exc)},
                )

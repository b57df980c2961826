"""Typed stage configuration, read once from the ``cdk.json`` context.

``cdk.json`` holds ``"context": {"stratus:stages": {"dev": {...}, "prod": {...}}}``
and the stage is picked with ``-c stage=prod`` (default ``dev``). Everything is
validated up front, so a typo fails synthesis with the field's name instead of
deploying a stack with a silently wrong value. This module does not import the
CDK, so the local cloud can read the same configuration cheaply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infra.operator_config import OperatorSubscription
from infra.paths import CDK_JSON
from infra.producers import Producer
from stratus.release_gate import GatePolicy

STAGES_CONTEXT_KEY = "stratus:stages"
STAGE_CONTEXT_KEY = "stage"
DEFAULT_STAGE = "dev"

#: The only retention periods CloudWatch Logs accepts (days).
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557}
    | {2922, 3288, 3653}
)
#: Lambda's synchronous request payload limit is 6 MB for the whole event (headers,
#: context, body); 5 MiB leaves room for the rest of the API Gateway proxy event.
MAX_BODY_BYTES_LIMIT = 5 * 1024 * 1024
STAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,20}$")
REGION_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


class StageConfigError(ValueError):
    """The stage configuration in ``cdk.json`` is missing or invalid."""


#: CodeDeploy's predefined Lambda traffic shifts, by the name ``cdk.json`` uses:
#: ``canary_<percent>_<minutes>`` (that share for that long, then the rest) and
#: ``linear_<percent>_<minutes>`` (that share more every that many minutes).
DeploymentConfigName = Literal[
    "all_at_once",
    "canary_10_5",
    "canary_10_10",
    "canary_10_15",
    "canary_10_30",
    "linear_10_1",
    "linear_10_2",
    "linear_10_3",
    "linear_10_10",
]
DEPLOYMENT_CONFIGS: tuple[str, ...] = get_args(DeploymentConfigName)


class DeploymentSettings(BaseModel):
    """How CodeDeploy shifts an agent's ``live`` alias to a new version (``deployment``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The traffic shift (dev: all at once; prod: canary 10% for 5 minutes).
    config: DeploymentConfigName = "all_at_once"
    #: The new version's p90 ``Duration`` alarm (ms); None: 80% of the function's timeout.
    max_p90_latency_ms: int | None = Field(default=None, ge=1, le=900_000)
    #: Period of the rollback alarms (seconds) and how many periods must breach.
    alarm_period_s: int = Field(default=60, ge=60, le=3600)
    alarm_evaluation_periods: int = Field(default=1, ge=1, le=10)


class MemorySettings(BaseModel):
    """Long-term semantic memory on S3 Vectors (issue 18): the stage's index (``memory``).

    The vector bucket is ``stratus-<stage>-memory`` (names are unique per account and
    region) and its index ``memories``; :mod:`infra.topology.memory` gives the functions
    that use memory these settings as ``STRATUS_MEMORY_*`` / ``STRATUS_EMBEDDING_MODEL``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Length of every embedding (the index's dimension; S3 Vectors allows 1..4096).
    dimension: int = Field(default=256, ge=1, le=4096)
    distance: Literal["cosine", "euclidean"] = "cosine"
    #: How long a memory is recalled (its ``expires_at``), and so its retention.
    ttl_days: int = Field(default=90, ge=1, le=3650)
    embedding_model: str = Field(default="text-embedding-3-small", min_length=1)
    #: None: SSE-S3 (AES256); a KMS key ARN: SSE-KMS with that customer managed key.
    kms_key_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[-a-z0-9]*:kms:[-a-z0-9]*:[0-9]{12}:key/.+$"
    )


class OtlpSettings(BaseModel):
    """OpenTelemetry export of model and tool spans (issue 16, :mod:`stratus.otel`): the
    stage's ``otlp``. ``endpoint`` is an OTLP/HTTP base URL (``/v1/traces`` is appended
    unless given); ``headers_secret`` names a Secrets Manager secret holding a JSON object
    of the exporter's headers (an API key). Absent: no export, nothing imported."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s/?#]+")
    headers_secret: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=r"^[A-Za-z0-9/_+=.@-]+$"
    )


#: AppConfig deployment strategies of flag changes: everything at once (dev), or
#: ``linear_<percent>_<minutes>``: that share more of the functions' polls get the new
#: version at every step, all of them after that many minutes.
FlagsStrategyName = Literal["all_at_once", "linear_20_5", "linear_50_10"]


class FlagsSettings(BaseModel):
    """Feature flags on AWS AppConfig (issue 19): the stage's ``flags``.

    ``max_age_s`` is how long a warm function keeps the document before it asks
    AppConfig again, so a flag change applies within it without a redeploy.
    ``strategy`` is how AppConfig deploys a new version; ``bake_minutes`` how long it
    watches after the last step before the deployment is complete.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_age_s: int = Field(default=30, ge=1, le=3600)
    strategy: FlagsStrategyName = "all_at_once"
    bake_minutes: int = Field(default=0, ge=0, le=1440)


class SyntheticSettings(BaseModel):
    """Synthetic traffic (issue 19): the stage's ``synthetic`` (staging sets it).

    Every ``schedule_minutes`` EventBridge Scheduler runs ``scenario`` against each
    agent's ``live`` alias (``infra.constructs.synthetic``); a failed case, or a run
    that does not happen, raises the operator alarm.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule_minutes: int = Field(default=15, ge=1, le=1440)
    scenario: Literal["smoke"] = "smoke"


def _default_release_gate() -> GatePolicy:
    return GatePolicy(max_cost_per_task_usd=0.05, min_eval_score=80.0)


class StageConfig(BaseModel):
    """How one stage (dev, prod, ...) of the stack is built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    #: Pin the stack to an account/region; both None keeps it environment-agnostic.
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    #: Residency (docs/regions.md): one stack per listed region, ``Stratus-<stage>-<region>``,
    #: each with its own tables, buckets and queues (nothing with tenant data is global).
    #: Empty: the one ``Stratus-<stage>`` stack. ``account`` may pin them; ``region`` may not
    #: be set with it (each stack is pinned to its own region).
    regions: tuple[str, ...] = ()

    log_retention_days: int
    api_throttle_rate: float = Field(gt=0, le=10_000, description="Steady requests per second.")
    api_throttle_burst: int = Field(ge=1, le=5_000, description="Bucket size for bursts.")
    #: How long API Gateway caches the authorizer's decision per key (0: no cache): a
    #: revoked key, an expired one or a suspended tenant is refused within this window.
    authorizer_cache_s: int = Field(default=60, ge=0, le=3600)

    #: ``destroy`` for throwaway stages; ``retain`` keeps tables, secret and logs.
    removal_policy: Literal["destroy", "retain"]
    #: DynamoDB deletion protection and CloudFormation termination protection.
    deletion_protection: bool = False

    tier_fast: str = Field(min_length=1, description="Model for the fast tier.")
    tier_smart: str = Field(min_length=1, description="Model for the smart tier.")

    max_body_bytes: int = Field(gt=0, le=MAX_BODY_BYTES_LIMIT)
    idempotency_ttl_s: int = Field(ge=60, le=30 * 24 * 3600)

    #: REST API execution logging needs an account-level CloudWatch role; create it
    #: unless the account already manages one elsewhere.
    api_gateway_cloudwatch_role: bool = True

    # -- asynchronous jobs (queues, workers, workflows) --------------------------------
    #: Timeout of each agent's job worker; its queue's visibility timeout is 6x this.
    job_worker_timeout_s: int = Field(default=300, ge=3, le=900)
    #: Deliveries of one job message before SQS moves it to the queue's DLQ.
    job_max_receive_count: int = Field(default=3, ge=1, le=1000)
    #: Event source mapping batch size and batching window of the job queues.
    job_batch_size: int = Field(default=5, ge=1, le=10)
    job_batching_window_s: int = Field(default=0, ge=0, le=300)
    #: How long finished job records are kept (DynamoDB TTL).
    job_retention_days: int = Field(default=30, ge=1, le=3650)
    #: How long a workflow waits for a human approval before the job fails.
    approval_timeout_s: int = Field(default=86_400, ge=1, le=31_536_000)

    # -- human review sampling -------------------------------------------------------
    #: Share (0..1) of every agent's live answers queued for human review.
    review_sample_rate: float = Field(default=0.05, ge=0, le=1)
    #: Per-agent shares that replace ``review_sample_rate`` ({agent: rate}).
    review_sample_rates: dict[str, float] = Field(default_factory=dict)
    #: The share of a canary's answers (the releases issue uses it); None: the agent's.
    review_sample_rate_canary: float | None = Field(default=None, ge=0, le=1)
    #: How long queued reviews are kept (DynamoDB TTL), graded or not.
    review_retention_days: int = Field(default=90, ge=1, le=3650)

    # -- security (issue 14) ----------------------------------------------------------
    #: How long audit events are kept (DynamoDB TTL on the audit table).
    audit_retention_days: int = Field(default=365, ge=1, le=3650)
    #: Bound producers (:mod:`infra.producers`): who may send to the ingest queue, and for
    #: which tenants. Empty: only the account root.
    producers: tuple[Producer, ...] = ()
    #: Fairness (:mod:`stratus.tenant_limits`): every tenant's request rate and burst
    #: (None: no limit; ``stratus tenant limits`` sets a tenant's own) and its cap on jobs
    #: queued or running; the worker event source mappings' maximum concurrency (AWS:
    #: at least 2); reserved concurrency of the platform function and per agent function
    #: (wins over the spec's ``deployment.reserved_concurrency``); and the unauthenticated
    #: routes' own method throttling (health, OpenAPI), apart from the tenants' capacity.
    tenant_rate_limit_rps: float | None = Field(default=None, gt=0, le=100_000)
    tenant_rate_limit_burst: int | None = Field(default=None, ge=1, le=1_000_000)
    max_queued_jobs: int | None = Field(default=None, ge=1, le=10_000_000)
    job_max_concurrency: int = Field(default=10, ge=2, le=1000)
    platform_reserved_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    agent_reserved_concurrency: dict[str, int] = Field(default_factory=dict)
    public_throttle_rate: float = Field(default=5, gt=0, le=10_000)
    public_throttle_burst: int = Field(default=10, ge=1, le=5_000)

    # -- observability (issue 16) -----------------------------------------------------
    #: Endpoints subscribed to the stage's operator alarm topic (infra.operator_config).
    operator_subscriptions: tuple[OperatorSubscription, ...] = ()

    # -- long-term memory (issue 18) ---------------------------------------------------
    memory: MemorySettings = Field(default_factory=MemorySettings)
    #: OpenTelemetry GenAI spans over OTLP/HTTP (issue 16); None: off.
    otlp: OtlpSettings | None = None
    # -- feature flags (issue 19) ------------------------------------------------------
    flags: FlagsSettings = Field(default_factory=FlagsSettings)
    #: Scheduled synthetic traffic against the agents (issue 19); None: none (dev, prod).
    synthetic: SyntheticSettings | None = None

    # -- releases (CodeDeploy on the agents' ``live`` aliases) -------------------------
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    #: How a candidate version is judged: the rollback alarms' thresholds and the
    #: pre-/post-traffic hooks' ``stratus.release_gate.decide`` (and ``stratus canary``).
    release_gate: GatePolicy = Field(default_factory=_default_release_gate)

    @field_validator("release_gate")
    @classmethod
    def _gate_has_limits(cls, value: GatePolicy) -> GatePolicy:
        # The alarms need absolute thresholds (an alarm cannot know the stable release).
        missing = [
            name
            for name in ("max_cost_per_task_usd", "min_eval_score")
            if getattr(value, name) is None
        ]
        if missing:
            raise ValueError(
                f"set {', '.join(missing)}: the rollback alarms on cost per task and eval "
                "score need absolute thresholds"
            )
        return value

    @field_validator("review_sample_rates")
    @classmethod
    def _review_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for agent, rate in value.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"the share of {agent!r} must be within 0..1, not {rate}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not STAGE_NAME.match(value):
            raise ValueError("stage names are lowercase letters, digits and '-', 1-21 long")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            allowed = ", ".join(str(d) for d in sorted(LOG_RETENTION_DAYS))
            raise ValueError(f"{value} is not a CloudWatch Logs retention period ({allowed})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StageConfig:
        if self.deletion_protection and self.removal_policy == "destroy":
            raise ValueError(
                "deletion_protection: true contradicts removal_policy 'destroy' "
                "(CloudFormation could never delete the protected tables)"
            )
        if self.regions:
            if self.region is not None:
                raise ValueError("set regions or region, not both (each stack pins its own)")
            return self
        if (self.account is None) != (self.region is None):
            raise ValueError("account and region: set both or neither")
        return self

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in value if not REGION_NAME.match(r)]
        if bad:
            raise ValueError(f"not AWS region names: {', '.join(bad)} (like eu-west-1)")
        if len(set(value)) != len(value):
            raise ValueError("regions must be unique")
        return value

    def in_region(self, region: str) -> StageConfig:
        """This stage as deployed in ``region`` (one of :attr:`regions`)."""
        if region not in self.regions:
            raise ValueError(f"{region!r} is not one of the stage's regions")
        return self.model_copy(update={"region": region})

    @property
    def retain(self) -> bool:
        return self.removal_policy == "retain"


def _describe(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "(stage)"
        parts.append(f"{field}: {problem['msg']}")
    return "; ".join(parts)


def parse_stage(name: str, stages: Any) -> StageConfig:
    """Validate the entry ``name`` of the ``stratus:stages`` mapping."""
    if stages is None:
        raise StageConfigError(
            f'cdk.json context "{STAGES_CONTEXT_KEY}" is missing: run the app through '
            "`npx cdk` (which passes cdk.json's context) or pass that context to App()"
        )
    if not isinstance(stages, Mapping) or not stages:
        raise StageConfigError(
            f'cdk.json context "{STAGES_CONTEXT_KEY}" must map stage names to settings'
        )
    if name not in stages:
        known = ", ".join(sorted(stages))
        raise StageConfigError(
            f'unknown stage {name!r}: cdk.json context "{STAGES_CONTEXT_KEY}" defines {known}'
        )
    raw = stages[name]
    if not isinstance(raw, Mapping):
        raise StageConfigError(f'"{STAGES_CONTEXT_KEY}".{name} must be an object')
    try:
        return StageConfig.model_validate({**raw, "name": name})
    except ValidationError as exc:
        raise StageConfigError(
            f'invalid "{STAGES_CONTEXT_KEY}".{name} in cdk.json: {_describe(exc)}'
        ) from None


def stage_from_context(get_context: Callable[[str], Any]) -> StageConfig:
    """The selected stage, from a CDK ``node.try_get_context``-like getter."""
    name = get_context(STAGE_CONTEXT_KEY) or DEFAULT_STAGE
    return parse_stage(str(name), get_context(STAGES_CONTEXT_KEY))


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` block of ``cdk.json`` (what the CDK CLI passes to the app)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StageConfigError(f"cannot read {path}: {exc}") from None
    context = data.get("context", {})
    if not isinstance(context, dict):
        raise StageConfigError(f'{path}: "context" must be an object')
    return context


def load_stage(name: str = DEFAULT_STAGE, path: Path = CDK_JSON) -> StageConfig:
    """Read one stage straight from ``cdk.json`` (for the local cloud and tests)."""
    return parse_stage(name, cdk_json_context(path).get(STAGES_CONTEXT_KEY))

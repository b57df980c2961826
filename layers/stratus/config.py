"""Typed runtime settings, read from the environment once per process.

The CDK stack sets these variables on every function, and the local cloud sets
the same ones, so a handler behaves identically in both places. Settings are
validated on first use (never at import time) and a bad value fails loudly with
the variable's name instead of surfacing later as an obscure runtime error.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ModelTier = Literal["fast", "smart"]


class Settings(BaseSettings):
    """Everything a Stratus function needs to know about where it runs."""

    model_config = SettingsConfigDict(env_prefix="STRATUS_", extra="ignore", frozen=True)

    stage: str = "dev"
    #: The region this function serves (Lambda sets ``AWS_REGION``): the authorizer refuses
    #: keys of tenants homed elsewhere (``wrong_region``). Empty: no region check.
    region: str = Field(default="", validation_alias=AliasChoices("STRATUS_REGION", "AWS_REGION"))
    #: The agent this function serves; empty for the platform function.
    agent: str = ""
    #: The release id of the served agent (``r-`` + 12 hex, :mod:`stratus.releases`), set
    #: by the stack and the local cloud; empty: computed once per process from the spec.
    release: str = ""

    tenants_table: str = ""
    idempotency_table: str = ""
    orders_table: str = ""
    #: Session heads, messages and queued turns (only agents with sessions get it).
    sessions_table: str = ""

    #: Secrets Manager id of the model keys secret (JSON: {"api_keys": [...]}).
    model_secret_name: str = ""
    #: A key given directly (local development only); wins over the secret.
    openai_api_key: str = Field(
        default="",
        validation_alias=AliasChoices("STRATUS_OPENAI_API_KEY", "OPENAI_API_KEY"),
        repr=False,
    )
    openai_base_url: HttpUrl | None = Field(
        default=None, validation_alias=AliasChoices("STRATUS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )

    tier_fast: str = "gpt-5-mini"
    tier_smart: str = "gpt-5"
    #: Optional path to a price table that replaces the bundled one.
    price_table: Path | None = None

    model_timeout_s: float = Field(default=20.0, gt=0, le=900)
    model_max_attempts: int = Field(default=3, ge=1, le=10)
    #: Exponential backoff with full jitter: uniform(0, min(cap, base * 2**n)).
    model_backoff_base_s: float = Field(default=0.5, ge=0)
    model_backoff_cap_s: float = Field(default=8.0, ge=0)
    #: Seconds kept back from the Lambda deadline to build and return a response.
    deadline_margin_s: float = Field(default=1.5, ge=0)
    secret_cache_s: int = Field(default=300, ge=0)

    max_body_bytes: int = Field(default=256 * 1024, gt=0, le=10 * 1024 * 1024)
    idempotency_ttl_s: int = Field(default=3600, gt=0)

    # -- the model gateway (issue 6): budgets, call ledger, cache, keys, breaker
    budgets_table: str = ""
    ledger_table: str = ""
    usage_table: str = ""
    limits_table: str = ""
    #: Fallback chains (comma-separated models) tried after the tier's model.
    tier_fast_fallbacks: str = "gpt-4.1-mini"
    tier_smart_fallbacks: str = "gpt-4.1"
    #: Where a fast-tier agent that allows downgrades goes past the threshold.
    tier_economy: str = "gpt-5-nano"
    #: Default budgets in USD (None: no limit); a tenant's own limits (CLI) win.
    budget_tenant_daily_usd: Decimal | None = Field(default=Decimal("50"), ge=0)
    budget_tenant_monthly_usd: Decimal | None = Field(default=Decimal("1000"), ge=0)
    budget_agent_daily_usd: Decimal | None = Field(default=None, ge=0)
    budget_global_daily_usd: Decimal | None = Field(default=None, ge=0)
    #: Cap per task: one request, one job, one session turn.
    budget_task_usd: Decimal | None = Field(default=Decimal("1"), ge=0)
    #: Percentages of a budget at which one alert per period is sent.
    budget_alert_thresholds: tuple[int, ...] = (50, 75, 90, 100)
    #: Past this percentage, agents that allow it move to a cheaper tier.
    budget_downgrade_at: int = Field(default=90, ge=1, le=100)
    #: A reservation is held until the calling function's deadline plus this margin
    #: (clock skew between hosts); after that an unsettled one is given back.
    budget_hold_margin_s: float = Field(default=30.0, ge=0, le=3600)
    #: The hold of a call without a deadline (scripts, local runs): Lambda's longest run.
    budget_max_hold_s: float = Field(default=900.0, gt=0, le=86_400)
    #: Open reservations per budget item (about 40 bytes each; the item's limit is 400 KB).
    budget_max_open_reservations: int = Field(default=1000, ge=1, le=5000)
    #: SNS topic (name, in this account and region) for budget alerts; empty: log only.
    alerts_topic_name: str = ""
    #: Per-key limits, enforced fleet-wide (token buckets in the limits table).
    key_rpm: int = Field(default=500, ge=1)
    key_tpm: int = Field(default=2_000_000, ge=1)
    #: Circuit breaker per (endpoint, model): opens after this many failures in a row.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=30.0, gt=0)
    #: How old a per-process copy of shared gateway state (breaker items, key-bucket
    #: loads) may be before it is refreshed off the critical path; 0: read on every call.
    gateway_state_cache_s: float = Field(default=2.0, ge=0, le=60)
    #: On Lambda, agent functions write a model call's post-call wave after the answer,
    #: from an internal extension (:mod:`stratus.after_response`); false: before it.
    settle_after_response: bool = True
    #: How long the call ledger keeps completions (replays of retried steps).
    ledger_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)

    # -- asynchronous jobs ------------------------------------------------------------
    jobs_table: str = ""
    #: Agent name -> URL of that agent's job queue (JSON).
    job_queues: dict[str, str] = Field(default_factory=dict)
    #: Where the ingest function puts messages that break the producer contract.
    ingest_dlq_url: str = ""
    #: SNS topic that receives one event per finished job.
    jobs_topic_arn: str = ""
    #: Agent name -> ARN of that agent's workflow state machine (JSON).
    workflows: dict[str, str] = Field(default_factory=dict)
    #: Secrets Manager id of the HMAC key that signs job callbacks (JSON: {"key": ...}).
    callback_secret_name: str = ""
    #: The tenants' own callback signing keys (:mod:`stratus.signing_keys`); the secret
    #: above is then only the fallback of tenants created before them.
    callback_keys_table: str = ""
    #: Bound producers (:mod:`stratus.jobs.producers`): JSON ``{sender id: [tenant ids or
    #: "*"]}``; empty: no binding (tests); ``{}``: only the account root may produce.
    producers: str = ""
    #: Allow job callbacks to loopback/private addresses (the local cloud only).
    callback_allow_private: bool = False
    #: The job queues' maxReceiveCount: the last delivery fails the job instead of retrying.
    job_max_receive_count: int = Field(default=3, ge=1)
    job_retention_days: int = Field(default=30, ge=1)
    approval_timeout_s: int = Field(default=86_400, ge=1)
    #: The job queue this worker consumes (retry backoff changes its messages' visibility).
    job_queue_url: str = ""
    #: Retryable job failures come back after uniform(d/2, d) seconds,
    #: d = min(cap, base * 2**(receive count - 1)) (ChangeMessageVisibility).
    job_retry_base_s: float = Field(default=10.0, ge=0, le=43_200)
    job_retry_cap_s: float = Field(default=300.0, ge=0, le=43_200)
    #: UTF-8 bytes of a job's input plus metadata accepted at submission (``input_too_large``);
    #: with results capped at 96 KiB, no job item can reach DynamoDB's 400 KB.
    job_max_input_bytes: int = Field(default=128 * 1024, ge=1, le=192 * 1024)
    #: The lease sweep: a lease counts as expired this long after ``lease_until``; a job it
    #: re-queues is held this long before it may be re-queued again.
    job_sweep_grace_s: float = Field(default=30.0, ge=0)
    job_sweep_hold_s: float = Field(default=300.0, ge=1)
    #: The callback delivery queue (finishing a job enqueues its callback there).
    callback_queue_url: str = ""
    #: The callback queue's maxReceiveCount: the last failed attempt records ``failed``.
    callback_max_receive_count: int = Field(default=5, ge=1)
    callback_timeout_s: float = Field(default=5.0, gt=0, le=30)

    # -- human review sampling (issue 12) ------------------------------------------------
    #: Reviews queued for people to grade, and the human score aggregates.
    reviews_table: str = ""
    #: Share (0..1) of live answers queued for review, for every agent ...
    review_sample_rate: float = Field(default=0.0, ge=0, le=1)
    #: ... unless the agent has its own share here (JSON ``{"agent": rate}``).
    review_sample_rates: dict[str, float] = Field(default_factory=dict)
    #: The share of a canary's answers (the releases issue sets it); None: the agent's share.
    review_sample_rate_canary: float | None = Field(default=None, ge=0, le=1)
    #: How long a queued review is kept (DynamoDB TTL), graded or not.
    review_retention_days: int = Field(default=90, ge=1, le=3650)

    # -- security (issue 14) --------------------------------------------------------------
    #: The audit trail (:mod:`stratus.audit`); empty: events are only logged.
    audit_table: str = ""
    #: How long an audit event is kept (DynamoDB TTL).
    audit_retention_days: int = Field(default=365, ge=1, le=3650)
    #: Fairness (:mod:`stratus.tenant_limits`): a tenant's request rate and burst by
    #: default (None: no limit; a tenant's own wins) and its cap on queued/running jobs.
    tenant_rate_limit_rps: float | None = Field(default=None, gt=0, le=100_000)
    tenant_rate_limit_burst: int | None = Field(default=None, ge=1, le=1_000_000)
    max_queued_jobs: int | None = Field(default=None, ge=1, le=10_000_000)

    # -- WebSocket streaming (issue 17) ---------------------------------------------------
    #: Connections, connect tickets and streamed requests (:mod:`stratus.streaming`).
    streams_table: str = ""
    #: The WebSocket management API endpoint frames are posted to (``@connections``).
    ws_callback_url: str = ""
    #: The stream router's agents: JSON ``{agent: function name or ARN (":live")}``.
    stream_functions: dict[str, str] = Field(default_factory=dict)

    # -- long-term memory (issue 18, :mod:`stratus.memory`): only functions that use it
    #: The S3 Vectors bucket and index; an empty bucket: memory is off for this function.
    memory_bucket: str = ""
    memory_index: str = "memories"
    memory_dimension: int = Field(default=256, ge=1, le=4096)
    memory_distance: Literal["cosine", "euclidean"] = "cosine"
    embedding_model: str = "text-embedding-3-small"
    #: How long a memory is kept (the stage's retention).
    memory_ttl_s: int = Field(default=90 * 86_400, ge=60, le=3650 * 86_400)

    # -- feature flags (issue 19, :mod:`stratus.flags`): AppConfig names, not ids
    #: The AppConfig application (``stratus-<stage>``); empty: the bundled default document
    #: only, and no AppConfig call (tests, scripts).
    flags_application: str = ""
    #: The AppConfig environment (``<stage>``; empty: the stage) and profile (``flags``).
    flags_environment: str = ""
    flags_profile: str = ""
    #: Seconds a fetched document is used before AppConfigData is asked again (per process):
    #: a flag change applies within this time, without a redeploy.
    flags_max_age_s: int = Field(default=30, ge=0, le=3600)

    @field_validator("review_sample_rates")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for agent, rate in value.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"review sample rate of {agent!r} must be within 0..1")
        return value

    @field_validator("agent", "release")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        return value.strip()

    def model_for(self, tier: ModelTier) -> str:
        return self.tier_fast if tier == "fast" else self.tier_smart

    def model_chain(self, tier: ModelTier) -> tuple[str, ...]:
        """The tier's model, then its fallbacks, without repeats."""
        extra = self.tier_fast_fallbacks if tier == "fast" else self.tier_smart_fallbacks
        chain = [self.model_for(tier), *(m.strip() for m in extra.split(",") if m.strip())]
        return tuple(dict.fromkeys(chain))

    def downgrade_chain(self, tier: ModelTier) -> tuple[str, ...]:
        """Where a tier goes past the downgrade threshold: smart -> fast, fast -> economy."""
        if tier == "smart":
            return self.model_chain("fast")
        return tuple(dict.fromkeys([self.tier_economy, *self.model_chain("fast")[1:]]))

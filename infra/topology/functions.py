"""Function plans: handler, sizing, environment and grants of every Lambda function."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.config import StageConfig
from infra.definitions import (
    AUDIT,
    BUDGETS,
    CALLBACK_KEYS,
    IDEMPOTENCY,
    JOBS,
    LIMITS,
    REVIEWS,
    SESSIONS,
    STREAMS,
    TENANTS,
    USAGE,
)
from infra.producers import sender_bindings
from infra.topology.common import (
    AGENT_RESOURCES,
    API_HANDLER,
    AUDIT_TABLES,
    AUTHORIZER_HANDLER,
    CALLBACK_MAX_RECEIVE_COUNT,
    CALLBACK_QUEUE,
    CALLBACK_QUEUE_ENV,
    CALLBACK_SECRET_ENV,
    CALLBACKS_HANDLER,
    CALLBACKS_TIMEOUT_S,
    GATEWAY_TABLES,
    INGEST_HANDLER,
    INGEST_QUEUE,
    INGEST_TIMEOUT_S,
    JOB_QUEUES_ENV,
    JOBS_TOPIC_ENV,
    MODEL_SECRET_ENV,
    POWERTOOLS_ENV,
    REVIEW_SAMPLING_TABLES,
    SWEEPER_HANDLER,
    SWEEPER_TIMEOUT_S,
    TABLE_ENV,
    WORKER_HANDLER,
    WORKFLOWS_ENV,
    FunctionKind,
    TableAccess,
    WorkflowAccess,
    agent_queue,
    alerts_topic_name,
    audit_env,
    dlq,
    fairness_env,
    pascal,
    review_sampling_env,
)
from infra.topology.flags import flags_env
from infra.topology.memory import agent_memory_env, platform_memory
from infra.topology.otel import otlp_env
from infra.topology.releases import (
    HOOK_MEMORY_MB,
    HOOK_TIMEOUT_S,
    POST_TRAFFIC_HANDLER,
    PRE_TRAFFIC_HANDLER,
    hook_env,
    release_env,
)
from infra.topology.streaming import (
    AGENT_STREAM_TABLES,
    StreamResources,
    StreamRole,
    stream_env_names,
    stream_environment,
    streaming_plans,
)
from stratus.agents import AgentSpec


@dataclass(frozen=True)
class JobResources:
    """Physical names of the job resources, given to :meth:`FunctionPlan.environment`.

    CDK passes tokens and its own JSON encoder (``Stack.to_json_string``); the
    local cloud passes the URLs and ARNs it created and ``json.dumps``.
    """

    queue_urls: Mapping[str, str]
    topic_arn: str
    workflow_arns: Mapping[str, str]
    callback_secret_id: str
    to_json: Callable[[Any], str] = json.dumps


@dataclass(frozen=True, eq=False)
class FunctionPlan:
    """One Lambda function: handler, sizing, environment and the access it is granted."""

    key: str
    kind: FunctionKind
    construct_id: str
    handler: str
    description: str
    memory_mb: int
    timeout_s: int
    reserved_concurrency: int | None
    #: Variables whose values are known before deployment.
    static_env: Mapping[str, str]
    #: Table logical name -> access; each also sets that table's ``STRATUS_*_TABLE``.
    tables: Mapping[str, TableAccess] = field(default_factory=dict)
    #: Read access to the model secret, passed as ``STRATUS_MODEL_SECRET_NAME``.
    model_secret: bool = False
    #: The agent this function serves; None for the platform and the authorizer.
    agent: str | None = None
    #: Queues (logical names) this function may send messages to.
    send_queues: tuple[str, ...] = ()
    #: Variable -> queue logical name whose URL it carries.
    queue_url_env: Mapping[str, str] = field(default_factory=dict)
    #: Agents whose job queue URLs it gets as JSON in ``STRATUS_JOB_QUEUES``.
    job_queue_agents: tuple[str, ...] = ()
    #: The queue it consumes through an event source mapping, if any.
    consumes: str | None = None
    #: Publishes job completion events (``STRATUS_JOBS_TOPIC_ARN``).
    publish_jobs_topic: bool = False
    #: Agent -> access to that agent's workflow (ARNs as JSON in ``STRATUS_WORKFLOWS``).
    workflows: Mapping[str, WorkflowAccess] = field(default_factory=dict)
    #: Reads the callback signing key (``STRATUS_CALLBACK_SECRET_NAME``).
    callback_secret: bool = False
    #: Publishes budget threshold alerts (topic named in ``STRATUS_ALERTS_TOPIC_NAME``).
    budget_alerts: bool = False
    #: Streams over the WebSocket API (``infra.topology.streaming``), and the router's agents.
    stream: StreamRole | None = None
    stream_agents: tuple[str, ...] = ()

    @property
    def env_names(self) -> tuple[str, ...]:
        """Every environment variable this function gets, sorted."""
        names = set(self.static_env)
        names.update(TABLE_ENV[table] for table in self.tables)
        if self.model_secret:
            names.add(MODEL_SECRET_ENV)
        names.update(self.queue_url_env)
        if self.job_queue_agents:
            names.add(JOB_QUEUES_ENV)
        if self.publish_jobs_topic:
            names.add(JOBS_TOPIC_ENV)
        if self.workflows:
            names.add(WORKFLOWS_ENV)
        if self.callback_secret:
            names.add(CALLBACK_SECRET_ENV)
        names.update(stream_env_names(self.stream))
        return tuple(sorted(names))

    @property
    def stratus_env_names(self) -> tuple[str, ...]:
        """The ``STRATUS_*`` variables (what ``stratus.config.Settings`` reads)."""
        return tuple(name for name in self.env_names if name.startswith("STRATUS_"))

    def environment(
        self,
        *,
        table_names: Mapping[str, str],
        model_secret_id: str | None = None,
        jobs: JobResources | None = None,
        stream: StreamResources | None = None,
    ) -> dict[str, str]:
        """The full environment, given physical table names and the secret id.

        CDK passes tokens (``table.table_name``, ``secret.secret_arn``); the local
        cloud passes the names it created. A missing value is an error, not a blank.
        """
        env = dict(self.static_env)
        for table in self.tables:
            if table not in table_names:
                raise KeyError(f"{self.key}: no physical name given for table {table!r}")
            env[TABLE_ENV[table]] = table_names[table]
        if self.model_secret:
            if not model_secret_id:
                raise KeyError(f"{self.key}: no model secret id given")
            env[MODEL_SECRET_ENV] = model_secret_id
        needs_jobs = (
            self.queue_url_env
            or self.job_queue_agents
            or self.publish_jobs_topic
            or self.workflows
            or self.callback_secret
        )
        if needs_jobs:
            if jobs is None:
                raise KeyError(f"{self.key}: no job resources given")
            for name, queue in self.queue_url_env.items():
                env[name] = jobs.queue_urls[queue]
            if self.job_queue_agents:
                env[JOB_QUEUES_ENV] = jobs.to_json(
                    {a: jobs.queue_urls[agent_queue(a)] for a in self.job_queue_agents}
                )
            if self.publish_jobs_topic:
                env[JOBS_TOPIC_ENV] = jobs.topic_arn
            if self.workflows:
                env[WORKFLOWS_ENV] = jobs.to_json(
                    {a: jobs.workflow_arns[a] for a in self.workflows}
                )
            if self.callback_secret:
                env[CALLBACK_SECRET_ENV] = jobs.callback_secret_id
        if stream is not None:  # CDK sets these once the WebSocket API exists
            env.update(stream_environment(self.stream, self.stream_agents, stream))
        return env


def _base_env(stage: StageConfig, agent: str) -> dict[str, str]:
    return {"STRATUS_STAGE": stage.name, "STRATUS_AGENT": agent, **POWERTOOLS_ENV}


#: What every function that finishes jobs needs to enqueue their callback deliveries.
NOTIFIES: Mapping[str, Any] = {
    "publish_jobs_topic": True,
    "queue_url_env": {CALLBACK_QUEUE_ENV: CALLBACK_QUEUE},
}


def agent_plan(spec: AgentSpec, stage: StageConfig) -> FunctionPlan:
    """The function of one agent: sized by its spec, granted what its tools need."""
    tables: dict[str, TableAccess] = {
        IDEMPOTENCY.name: "read_write",
        **GATEWAY_TABLES,
        # Its answers (invoke, session turns, jobs in its worker) are sampled for review.
        **REVIEW_SAMPLING_TABLES,
        # Tool calls, denials and refusals go to the audit trail (the worker copies this).
        **AUDIT_TABLES,
        **AGENT_STREAM_TABLES,  # streamed requests (FRAME# items)
    }
    for resource in sorted(spec.resources):
        if resource not in AGENT_RESOURCES:
            raise ValueError(f"agent {spec.name!r} needs {resource!r}, which the stack lacks")
        table, access = AGENT_RESOURCES[resource]
        tables[table] = access
    if spec.sessions is not None:
        # Only agents with sessions read and write the sessions table.
        tables[SESSIONS.name] = "read_write"
    env = _base_env(stage, spec.name)
    env.update(
        {
            "STRATUS_TIER_FAST": stage.tier_fast,
            "STRATUS_TIER_SMART": stage.tier_smart,
            "STRATUS_MAX_BODY_BYTES": str(stage.max_body_bytes),
            "STRATUS_IDEMPOTENCY_TTL_S": str(stage.idempotency_ttl_s),
            "STRATUS_ALERTS_TOPIC_NAME": alerts_topic_name(stage),
            **review_sampling_env(stage),
            **audit_env(stage),
            **fairness_env(stage),
        }
    )
    # The release this function serves, hashed from the settings it reads (the worker
    # copies this environment, so both functions of an agent serve the same release).
    env.update(agent_memory_env(spec, stage))  # only when its spec sets ``memory``
    env.update(release_env(spec, env))
    env.update(otlp_env(stage))  # telemetry export is not part of the release (issue 16)
    # Where its feature flags live (issue 19; the worker copies this): names, not a
    # behaviour, so not part of the release either.
    env.update(flags_env(stage))
    return FunctionPlan(
        key=f"agent:{spec.name}",
        kind="agent",
        construct_id=f"Agent{pascal(spec.name)}",
        handler=API_HANDLER,
        description=f"Stratus agent {spec.name} {spec.version} ({spec.tier} tier)",
        memory_mb=spec.deployment.memory_mb,
        timeout_s=spec.deployment.timeout_s,
        # The stage's own for this agent wins over the spec's.
        reserved_concurrency=stage.agent_reserved_concurrency.get(
            spec.name, spec.deployment.reserved_concurrency
        ),
        static_env=env,
        tables=tables,
        model_secret=True,
        agent=spec.name,
        budget_alerts=True,
        stream="agent",
    )


def _platform_tables(jobs: bool) -> dict[str, TableAccess]:
    # The health check reads the tenants table and describes the idempotency one.
    # GET /v1/usage reads the usage the settlements record on the budget items (and the
    # job and session totals in the usage table).
    tables: dict[str, TableAccess] = {
        # /v1/keys: create, revoke and rotate key items (and query the tenant_keys index).
        TENANTS.name: "read_write",
        IDEMPOTENCY.name: "describe",
        BUDGETS.name: "read",
        USAGE.name: "read",
        # GET/POST /v1/reviews: list reviews, grade them, read and add to the human scores.
        REVIEWS.name: "read_write",
        # GET /v1/audit reads the trail; approvals and refusals write to it.
        AUDIT.name: "read_write",
        # POST /v1/callback-keys/rotate: a tenant's new signing key, the old one retired.
        CALLBACK_KEYS.name: "read_write",
        # Tenants' request buckets (stratus.tenant_limits): one conditional write a request.
        LIMITS.name: "read_write",
        # POST /v1/stream-tickets: one single-use TICKET# item (infra.topology.streaming).
        STREAMS.name: "write",
    }
    if jobs:
        tables[JOBS.name] = "read_write"
    return tables


def platform_plan(stage: StageConfig, specs: Mapping[str, AgentSpec] | None = None) -> FunctionPlan:
    """Health, OpenAPI, the 404 for unknown agents and the jobs API; never calls a model.

    With ``specs`` it also serves ``/v1/jobs``: it writes job records, sends each
    job to its agent's queue, answers approvals and stops cancelled workflows.
    """
    env = _base_env(stage, "")
    env["STRATUS_MAX_BODY_BYTES"] = str(stage.max_body_bytes)
    env["STRATUS_REVIEW_RETENTION_DAYS"] = str(stage.review_retention_days)
    env.update(audit_env(stage))
    env.update(fairness_env(stage))
    memory = platform_memory(stage, specs)  # /v1/memory, when an agent uses memory
    env.update(memory.env)
    jobs: dict[str, Any] = {}
    if specs:
        names = tuple(sorted(specs))
        env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
        env.update(flags_env(stage))  # POST /v1/jobs: 503 agent_disabled (issue 19)
        jobs = {
            "send_queues": (*(agent_queue(a) for a in names), CALLBACK_QUEUE),
            "job_queue_agents": names,
            "workflows": {a: "respond" for a in names if specs[a].workflow},
            # Cancelling announces the job like any other completion.
            **NOTIFIES,
        }
    return FunctionPlan(
        key="platform",
        kind="platform",
        construct_id="Platform",
        handler=API_HANDLER,
        description="Stratus platform routes: health, OpenAPI, unknown agents",
        memory_mb=512,
        timeout_s=10,
        reserved_concurrency=stage.platform_reserved_concurrency,
        static_env=env,
        tables={**_platform_tables(bool(specs)), **memory.tables},
        model_secret=memory.model_calls,
        budget_alerts=memory.model_calls,
        **jobs,
    )


def authorizer_plan(stage: StageConfig) -> FunctionPlan:
    """The REQUEST authorizer: API key -> tenant, from the tenants table."""
    env = {"STRATUS_STAGE": stage.name, **POWERTOOLS_ENV, **audit_env(stage)}
    return FunctionPlan(
        key="authorizer",
        kind="authorizer",
        construct_id="Authorizer",
        handler=AUTHORIZER_HANDLER,
        description="Stratus API authorizer: API key to tenant",
        # Runs before every uncached request: enough memory for a fast cold start.
        memory_mb=512,
        timeout_s=10,
        reserved_concurrency=None,
        static_env=env,
        # Refusals (a suspended tenant) go to the audit trail.
        tables={TENANTS.name: "read", **AUDIT_TABLES},
    )


def worker_plan(spec: AgentSpec, stage: StageConfig) -> FunctionPlan:
    """The job worker of one agent: consumes the agent's queue, runs its workflow steps.

    A separate function from the agent's synchronous one: it may run up to 15
    minutes (the API's stays under API Gateway's 29 s), a burst of jobs cannot
    use up the concurrency the synchronous API needs, and only it holds the
    grants async work needs (jobs table, topic, callback key, workflow).
    """
    sync = agent_plan(spec, stage)
    skip = (IDEMPOTENCY.name, *AGENT_STREAM_TABLES)  # the worker never streams
    tables = {k: v for k, v in sync.tables.items() if k not in skip}
    tables[JOBS.name] = "read_write"
    env = dict(sync.static_env)
    env.pop("STRATUS_MAX_BODY_BYTES", None)
    env.pop("STRATUS_IDEMPOTENCY_TTL_S", None)
    env["STRATUS_JOB_MAX_RECEIVE_COUNT"] = str(stage.job_max_receive_count)
    env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
    # The lease covers the invocation; retries come back after a backoff (its own queue).
    queue_urls = {"STRATUS_JOB_QUEUE_URL": agent_queue(spec.name), **NOTIFIES["queue_url_env"]}
    if spec.workflow:
        env["STRATUS_APPROVAL_TIMEOUT_S"] = str(stage.approval_timeout_s)
    targets = tuple(sorted(set(spec.routes.values())))
    return FunctionPlan(
        key=f"worker:{spec.name}",
        kind="worker",
        construct_id=f"Worker{pascal(spec.name)}",
        handler=WORKER_HANDLER,
        description=f"Stratus job worker of agent {spec.name} {spec.version}",
        memory_mb=spec.deployment.memory_mb,
        timeout_s=stage.job_worker_timeout_s,
        reserved_concurrency=None,
        static_env=env,
        tables=tables,
        model_secret=True,
        agent=spec.name,
        send_queues=(*(agent_queue(a) for a in targets), CALLBACK_QUEUE),
        queue_url_env=queue_urls,
        job_queue_agents=targets,
        consumes=agent_queue(spec.name),
        publish_jobs_topic=True,
        workflows={spec.name: "start"} if spec.workflow else {},
        budget_alerts=sync.budget_alerts,
    )


def ingest_plan(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> FunctionPlan:
    """Consumes the producer contract queue: validates, creates jobs, routes to agent queues."""
    names = tuple(sorted(specs))
    env = _base_env(stage, "")
    env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
    # Sender id -> the tenants it may submit for (infra.producers); {}: the account root only.
    env["STRATUS_PRODUCERS"] = json.dumps(sender_bindings(stage.producers), sort_keys=True)
    env.update(fairness_env(stage))  # the stage's cap on queued jobs
    return FunctionPlan(
        key="ingest",
        kind="ingest",
        construct_id="Ingest",
        handler=INGEST_HANDLER,
        description="Stratus ingest: producer contract v1 messages to jobs",
        memory_mb=512,
        timeout_s=INGEST_TIMEOUT_S,
        reserved_concurrency=None,
        static_env=env,
        # A tenant's own cap on queued jobs is on its LIMITS# item (budgets table).
        tables={TENANTS.name: "read", JOBS.name: "read_write", BUDGETS.name: "read"},
        send_queues=(*(agent_queue(a) for a in names), dlq(INGEST_QUEUE)),
        queue_url_env={"STRATUS_INGEST_DLQ_URL": dlq(INGEST_QUEUE)},
        job_queue_agents=names,
        consumes=INGEST_QUEUE,
    )


def sweeper_plan(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> FunctionPlan:
    """The sweeps, on a schedule: re-queues (any agent's queue) or fails expired jobs, and
    gives back expired budget reservations of every tenant and agent."""
    names = tuple(sorted(specs))
    env = _base_env(stage, "")
    env["STRATUS_JOB_MAX_RECEIVE_COUNT"] = str(stage.job_max_receive_count)
    env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
    return FunctionPlan(
        key="sweeper",
        kind="sweeper",
        construct_id="Sweeper",
        handler=SWEEPER_HANDLER,
        description="Stratus sweeps: expired job leases and budget reservations",
        memory_mb=256,
        timeout_s=SWEEPER_TIMEOUT_S,
        # One sweep at a time (they would only race on the same conditional writes).
        reserved_concurrency=None,
        static_env=env,
        tables={JOBS.name: "read_write", BUDGETS.name: "read_write", TENANTS.name: "read"},
        send_queues=(*(agent_queue(a) for a in names), CALLBACK_QUEUE),
        job_queue_agents=names,
        **NOTIFIES,
    )


def callbacks_plan(stage: StageConfig) -> FunctionPlan:
    """Delivers job callbacks from the callback queue: signed, pinned, retried, recorded."""
    env = _base_env(stage, "")
    env["STRATUS_CALLBACK_MAX_RECEIVE_COUNT"] = str(CALLBACK_MAX_RECEIVE_COUNT)
    env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
    return FunctionPlan(
        key="callbacks",
        kind="callbacks",
        construct_id="Callbacks",
        handler=CALLBACKS_HANDLER,
        description="Stratus job callbacks: signed POSTs to the jobs' callback URLs",
        memory_mb=256,
        timeout_s=CALLBACKS_TIMEOUT_S,
        reserved_concurrency=None,
        static_env=env,
        # The job's tenant's signing keys (one Query per attempt).
        tables={JOBS.name: "read_write", CALLBACK_KEYS.name: "read"},
        queue_url_env={CALLBACK_QUEUE_ENV: CALLBACK_QUEUE},
        consumes=CALLBACK_QUEUE,
        callback_secret=True,
    )


def release_hook_plans(stage: StageConfig) -> list[FunctionPlan]:
    """The CodeDeploy pre- and post-traffic hooks, shared by every agent's deployment groups.

    They get no table, secret or queue: their grants (invoke and read the agent
    functions' versions, report the hook status, read metrics) name resources only
    the stack knows, so the release construct adds them.
    """
    env = hook_env(stage)
    return [
        FunctionPlan(
            key="release:pre_traffic",
            kind="release_hook",
            construct_id="ReleasePreTraffic",
            handler=PRE_TRAFFIC_HANDLER,
            description="Stratus release gate: critical evals on a new version before traffic",
            memory_mb=HOOK_MEMORY_MB,
            timeout_s=HOOK_TIMEOUT_S,
            reserved_concurrency=None,
            static_env=env,
        ),
        FunctionPlan(
            key="release:post_traffic",
            kind="release_hook",
            construct_id="ReleasePostTraffic",
            handler=POST_TRAFFIC_HANDLER,
            description="Stratus release gate: the new version against the old after traffic",
            memory_mb=HOOK_MEMORY_MB,
            timeout_s=HOOK_TIMEOUT_S,
            reserved_concurrency=None,
            static_env=env,
        ),
    ]


def job_function_plans(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> list[FunctionPlan]:
    """The functions of asynchronous jobs besides the workers: ingest, sweeper, callbacks."""
    return [ingest_plan(stage, specs), sweeper_plan(stage, specs), callbacks_plan(stage)]


def function_plans(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> list[FunctionPlan]:
    """Every function: platform, authorizer, ingest, sweeper, callbacks, an API and a
    worker function per agent, and the two release hooks."""
    unreserved = sorted(set(stage.agent_reserved_concurrency) - set(specs))
    if unreserved:
        raise ValueError(f"agent_reserved_concurrency names agents the stack lacks: {unreserved}")
    unknown = sorted(set(stage.review_sample_rates) - set(specs))
    if unknown:
        raise ValueError(f"review_sample_rates names agents the stack lacks: {unknown}")
    plans = [platform_plan(stage, specs), authorizer_plan(stage), *job_function_plans(stage, specs)]
    plans.extend(agent_plan(specs[name], stage) for name in sorted(specs))
    plans.extend(worker_plan(specs[name], stage) for name in sorted(specs))
    plans.extend(release_hook_plans(stage))
    plans.extend(streaming_plans(stage, specs, FunctionPlan))
    return plans

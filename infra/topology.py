"""What runs where, as plain data: functions (environment, grants), routes, gateway errors.

The CDK constructs build Lambda functions and API Gateway routes from these
plans, and the local cloud runs the same handlers with the same variables behind
the same routes, so the two cannot drift. Resource values (table names, the
secret ARN) are the only part that differs: CDK fills in tokens, the local cloud
its own names, both through :meth:`FunctionPlan.environment`. No CDK import here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from infra.config import StageConfig
from infra.definitions import (
    BUDGETS,
    IDEMPOTENCY,
    JOBS,
    LEDGER,
    LIMITS,
    ORDERS,
    SESSIONS,
    TENANTS,
    USAGE,
)
from infra.paths import REPO_ROOT
from stratus.agents import AgentSpec, Resource
from stratus.errors import (
    PayloadTooLarge,
    RouteNotFound,
    StratusError,
    Unauthorized,
    ValidationFailed,
)

API_HANDLER = "functions.handlers.api.lambda_handler"
AUTHORIZER_HANDLER = "functions.handlers.authorizer.lambda_handler"
WORKER_HANDLER = "functions.handlers.worker.lambda_handler"
INGEST_HANDLER = "functions.handlers.ingest.lambda_handler"
MODEL_SECRET_ENV = "STRATUS_MODEL_SECRET_NAME"  # noqa: S105 - a variable name
JOB_QUEUES_ENV = "STRATUS_JOB_QUEUES"
JOBS_TOPIC_ENV = "STRATUS_JOBS_TOPIC_ARN"
WORKFLOWS_ENV = "STRATUS_WORKFLOWS"
CALLBACK_SECRET_ENV = "STRATUS_CALLBACK_SECRET_NAME"  # noqa: S105 - a variable name
INGEST_QUEUE = "ingest"
WORKFLOWS_DIR = REPO_ROOT / "infra" / "workflows"

FunctionKind = Literal["agent", "platform", "authorizer", "worker", "ingest"]
#: ``start`` starts executions; ``respond`` answers task tokens and stops executions.
WorkflowAccess = Literal["start", "respond"]
#: ``describe`` is DescribeTable only: what a health check needs, nothing more.
TableAccess = Literal["read", "read_write", "describe"]

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
    for t in (TENANTS, IDEMPOTENCY, ORDERS, JOBS, SESSIONS, BUDGETS, LEDGER, USAGE, LIMITS)
}

#: What every function that calls a model needs: the model gateway's tables.
GATEWAY_TABLES: Mapping[str, TableAccess] = {
    BUDGETS.name: "read_write",
    LEDGER.name: "read_write",
    USAGE.name: "read_write",
    LIMITS.name: "read_write",
}


def alerts_topic_name(stage: StageConfig) -> str:
    """The budget alerts topic: named, so functions know it before deployment."""
    return f"stratus-{stage.name}-budget-alerts"


def agent_queue(agent: str) -> str:
    """The logical name of an agent's job queue (its DLQ is ``<name>-dlq``)."""
    return f"agent-{agent}"


def dlq(queue: str) -> str:
    return f"{queue}-dlq"


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
        return env


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _base_env(stage: StageConfig, agent: str) -> dict[str, str]:
    return {"STRATUS_STAGE": stage.name, "STRATUS_AGENT": agent, **POWERTOOLS_ENV}


def agent_plan(spec: AgentSpec, stage: StageConfig) -> FunctionPlan:
    """The function of one agent: sized by its spec, granted what its tools need."""
    tables: dict[str, TableAccess] = {IDEMPOTENCY.name: "read_write", **GATEWAY_TABLES}
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
        }
    )
    return FunctionPlan(
        key=f"agent:{spec.name}",
        kind="agent",
        construct_id=f"Agent{_pascal(spec.name)}",
        handler=API_HANDLER,
        description=f"Stratus agent {spec.name} {spec.version} ({spec.tier} tier)",
        memory_mb=spec.deployment.memory_mb,
        timeout_s=spec.deployment.timeout_s,
        reserved_concurrency=spec.deployment.reserved_concurrency,
        static_env=env,
        tables=tables,
        model_secret=True,
        agent=spec.name,
        budget_alerts=True,
    )


def _platform_tables(jobs: bool) -> dict[str, TableAccess]:
    # The health check reads the tenants table and describes the idempotency one.
    # ... and serves GET /v1/usage from the usage rollups.
    tables: dict[str, TableAccess] = {
        TENANTS.name: "read",
        IDEMPOTENCY.name: "describe",
        USAGE.name: "read",
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
    jobs: dict[str, Any] = {}
    if specs:
        names = tuple(sorted(specs))
        env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
        jobs = {
            "send_queues": tuple(agent_queue(a) for a in names),
            "job_queue_agents": names,
            "workflows": {a: "respond" for a in names if specs[a].workflow},
            # Cancelling announces the job like any other completion.
            "publish_jobs_topic": True,
            "callback_secret": True,
        }
    return FunctionPlan(
        key="platform",
        kind="platform",
        construct_id="Platform",
        handler=API_HANDLER,
        description="Stratus platform routes: health, OpenAPI, unknown agents",
        memory_mb=512,
        timeout_s=10,
        reserved_concurrency=None,
        static_env=env,
        tables=_platform_tables(bool(specs)),
        **jobs,
    )


def authorizer_plan(stage: StageConfig) -> FunctionPlan:
    """The REQUEST authorizer: API key -> tenant, from the tenants table."""
    env = {"STRATUS_STAGE": stage.name, **POWERTOOLS_ENV}
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
        tables={TENANTS.name: "read"},
    )


def worker_plan(spec: AgentSpec, stage: StageConfig) -> FunctionPlan:
    """The job worker of one agent: consumes the agent's queue, runs its workflow steps.

    A separate function from the agent's synchronous one: it may run up to 15
    minutes (the API's stays under API Gateway's 29 s), a burst of jobs cannot
    use up the concurrency the synchronous API needs, and only it holds the
    grants async work needs (jobs table, topic, callback key, workflow).
    """
    sync = agent_plan(spec, stage)
    tables = {k: v for k, v in sync.tables.items() if k != IDEMPOTENCY.name}
    tables[JOBS.name] = "read_write"
    env = dict(sync.static_env)
    env.pop("STRATUS_MAX_BODY_BYTES", None)
    env.pop("STRATUS_IDEMPOTENCY_TTL_S", None)
    env["STRATUS_JOB_MAX_RECEIVE_COUNT"] = str(stage.job_max_receive_count)
    env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
    if spec.workflow:
        env["STRATUS_APPROVAL_TIMEOUT_S"] = str(stage.approval_timeout_s)
    targets = tuple(sorted(set(spec.routes.values())))
    return FunctionPlan(
        key=f"worker:{spec.name}",
        kind="worker",
        construct_id=f"Worker{_pascal(spec.name)}",
        handler=WORKER_HANDLER,
        description=f"Stratus job worker of agent {spec.name} {spec.version}",
        memory_mb=spec.deployment.memory_mb,
        timeout_s=stage.job_worker_timeout_s,
        reserved_concurrency=None,
        static_env=env,
        tables=tables,
        model_secret=True,
        agent=spec.name,
        send_queues=tuple(agent_queue(a) for a in targets),
        job_queue_agents=targets,
        consumes=agent_queue(spec.name),
        publish_jobs_topic=True,
        workflows={spec.name: "start"} if spec.workflow else {},
        callback_secret=True,
        budget_alerts=sync.budget_alerts,
    )


#: The ingest function's timeout; its queue's visibility timeout is 6x this.
INGEST_TIMEOUT_S = 30


def ingest_plan(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> FunctionPlan:
    """Consumes the producer contract queue: validates, creates jobs, routes to agent queues."""
    names = tuple(sorted(specs))
    env = _base_env(stage, "")
    env["STRATUS_JOB_RETENTION_DAYS"] = str(stage.job_retention_days)
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
        tables={TENANTS.name: "read", JOBS.name: "read_write"},
        send_queues=(*(agent_queue(a) for a in names), dlq(INGEST_QUEUE)),
        queue_url_env={"STRATUS_INGEST_DLQ_URL": dlq(INGEST_QUEUE)},
        job_queue_agents=names,
        consumes=INGEST_QUEUE,
    )


def function_plans(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> list[FunctionPlan]:
    """Every function: platform, authorizer, ingest, and an API and a worker function per agent."""
    plans = [platform_plan(stage, specs), authorizer_plan(stage), ingest_plan(stage, specs)]
    plans.extend(agent_plan(specs[name], stage) for name in sorted(specs))
    plans.extend(worker_plan(specs[name], stage) for name in sorted(specs))
    return plans


@dataclass(frozen=True)
class QueuePlan:
    """A standard queue with its own DLQ, and the function that consumes it.

    The visibility timeout is six times the consumer's timeout (AWS guidance for
    Lambda event sources): a batch still running is never handed out twice.
    """

    name: str
    construct_id: str
    description: str
    visibility_timeout_s: int
    max_receive_count: int
    consumer: str
    batch_size: int
    batching_window_s: int = 0
    report_batch_item_failures: bool = True
    #: DLQ messages are kept for the maximum (14 days) so that nothing is lost.
    dlq_retention_s: int = 14 * 24 * 3600

    @property
    def dlq_name(self) -> str:
        return dlq(self.name)


def queue_plans(stage: StageConfig, specs: Mapping[str, AgentSpec]) -> list[QueuePlan]:
    """The ingest queue, then one queue per agent (each with its own DLQ)."""
    plans = [
        QueuePlan(
            name=INGEST_QUEUE,
            construct_id="Ingest",
            description="Producer contract v1 messages from other systems",
            visibility_timeout_s=6 * INGEST_TIMEOUT_S,
            max_receive_count=stage.job_max_receive_count,
            consumer="ingest",
            batch_size=10,
        )
    ]
    for name in sorted(specs):
        plans.append(
            QueuePlan(
                name=agent_queue(name),
                construct_id=f"Agent{_pascal(name)}",
                description=f"Jobs of agent {name}",
                visibility_timeout_s=6 * stage.job_worker_timeout_s,
                max_receive_count=stage.job_max_receive_count,
                consumer=f"worker:{name}",
                batch_size=stage.job_batch_size,
                batching_window_s=stage.job_batching_window_s,
            )
        )
    return plans


@dataclass(frozen=True)
class WorkflowPlan:
    """A Standard state machine from an ASL file; ``${Var}`` -> the ARN of a function key.

    CDK passes the same file with ``definition_substitutions``; the local cloud
    substitutes the same variables itself (:meth:`render`).
    """

    agent: str
    construct_id: str
    asl_path: Path
    #: Substitution variable -> function plan key whose ARN replaces it.
    functions: Mapping[str, str]

    def state_machine_name(self, stage: StageConfig) -> str:
        return f"stratus-{stage.name}-{self.agent.replace('_', '-')}"

    @property
    def definition(self) -> str:
        return self.asl_path.read_text(encoding="utf-8")

    def render(self, function_arns: Mapping[str, str]) -> str:
        """The definition with every variable replaced by the ARN of its function."""
        text = self.definition
        for var, key in self.functions.items():
            text = text.replace("${" + var + "}", function_arns[key])
        if "${" in text:
            raise ValueError(f"{self.asl_path}: unsubstituted variable left")
        return text


def workflow_plans(specs: Mapping[str, AgentSpec]) -> list[WorkflowPlan]:
    """One state machine per agent that declares a workflow."""
    plans = []
    for name in sorted(specs):
        workflow = specs[name].workflow
        if workflow is None:
            continue
        path = WORKFLOWS_DIR / f"{workflow}.asl.json"
        if not path.is_file():
            raise ValueError(f"agent {name!r} declares workflow {workflow!r}; {path} is missing")
        plans.append(
            WorkflowPlan(
                agent=name,
                construct_id=f"Workflow{_pascal(name)}",
                asl_path=path,
                functions={"WorkerFunctionArn": f"worker:{name}"},
            )
        )
    return plans


@dataclass(frozen=True)
class Route:
    """One API Gateway method: path, verb, target function, auth and validation."""

    method: str
    path: str
    target: str
    authorized: bool
    #: Validate the JSON body against ``stratus.contracts.InvokeRequest``.
    validate_invoke_body: bool = False


def api_routes(agent_names: Iterable[str]) -> list[Route]:
    """The REST API: public platform routes, per-agent routes, the unknown-agent fallback.

    API Gateway prefers literal path segments over ``{agent}``, so a known agent
    reaches its own function and any other name reaches the platform's 404.
    """
    routes = [
        Route("GET", "/v1/health", "platform", authorized=False),
        Route("GET", "/v1/openapi.json", "platform", authorized=False),
        Route("GET", "/v1/usage", "platform", authorized=True),
        # Jobs are not agent-scoped: the platform function records and enqueues them.
        Route("POST", "/v1/jobs", "platform", authorized=True),
        Route("GET", "/v1/jobs/{job_id}", "platform", authorized=True),
        Route("POST", "/v1/jobs/{job_id}/cancel", "platform", authorized=True),
        Route("POST", "/v1/jobs/{job_id}/approval", "platform", authorized=True),
    ]
    for name in sorted(agent_names):
        target = f"agent:{name}"
        routes.append(
            Route("POST", f"/v1/agents/{name}/invoke", target, True, validate_invoke_body=True)
        )
        routes.append(Route("ANY", f"/v1/agents/{name}/{{proxy+}}", target, authorized=True))
    routes.append(Route("ANY", "/v1/agents/{agent}/{proxy+}", "platform", authorized=True))
    return routes


@dataclass(frozen=True)
class GatewayError:
    """An error API Gateway answers itself, in the handlers' error shape.

    The CDK stack turns each into a gateway response; the local gateway answers
    the same status, code and message for the same situation.
    """

    name: str
    #: The API Gateway response type (``UNAUTHORIZED``, ``DEFAULT_4XX``, ...).
    response_type: str
    #: None keeps the status API Gateway chose (the DEFAULT_* families).
    status: int | None
    code: str
    #: A literal message, or a ``$context`` variable that API Gateway substitutes.
    message: str
    #: True if ``message`` is a variable that already yields a quoted JSON string.
    message_is_json: bool = False

    def template(self) -> str:
        """The response template: valid JSON once API Gateway substitutes the variables."""
        sentinel = "__STRATUS_MESSAGE__"
        text = json.dumps(
            self.body("$context.requestId", sentinel if self.message_is_json else None),
            separators=(",", ":"),
        )
        return text.replace(f'"{sentinel}"', self.message) if self.message_is_json else text

    def body(self, request_id: str, message: str | None = None) -> dict[str, Any]:
        """The JSON body, with ``message`` replacing the default (local gateway)."""
        return {
            "error": {
                "code": self.code,
                "message": self.message if message is None else message,
                "request_id": request_id,
            }
        }


#: Status codes and codes come from ``stratus.errors`` where the handlers have them.
GATEWAY_ERRORS: tuple[GatewayError, ...] = (
    GatewayError(
        "Unauthorized",
        "UNAUTHORIZED",
        Unauthorized.status,
        Unauthorized.code,
        "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
    ),
    GatewayError(
        "AccessDenied", "ACCESS_DENIED", 403, "forbidden", "This key may not call this route."
    ),
    # API Gateway's answer for a route that does not exist (not only for missing tokens).
    GatewayError(
        "MissingAuthenticationToken",
        "MISSING_AUTHENTICATION_TOKEN",
        RouteNotFound.status,
        RouteNotFound.code,
        "No such route.",
    ),
    GatewayError(
        "RequestTooLarge",
        "REQUEST_TOO_LARGE",
        PayloadTooLarge.status,
        PayloadTooLarge.code,
        "The request body is too large.",
    ),
    # validationErrorString comes JSON-escaped from API Gateway; it goes inside quotes.
    GatewayError(
        "BadRequestBody",
        "BAD_REQUEST_BODY",
        ValidationFailed.status,
        ValidationFailed.code,
        "$context.error.validationErrorString",
    ),
    GatewayError("Throttled", "THROTTLED", 429, "throttled", "Too many requests; retry later."),
    GatewayError(
        "IntegrationTimeout",
        "INTEGRATION_TIMEOUT",
        504,
        "timeout",
        "The agent did not answer in time; use an asynchronous job for long work.",
    ),
    # Any other 4xx API Gateway produces keeps its status; messageString is quoted JSON.
    GatewayError(
        "Default4xx",
        "DEFAULT_4XX",
        None,
        "bad_request",
        "$context.error.messageString",
        message_is_json=True,
    ),
    GatewayError(
        "Default5xx", "DEFAULT_5XX", None, StratusError.code, "An internal error occurred."
    ),
)


def gateway_error(response_type: str) -> GatewayError:
    """The gateway error for an API Gateway response type, e.g. ``UNAUTHORIZED``."""
    for error in GATEWAY_ERRORS:
        if error.response_type == response_type:
            return error
    raise KeyError(f"no gateway error for {response_type!r}")

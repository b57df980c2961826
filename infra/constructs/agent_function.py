"""Lambda functions built from ``infra.topology`` plans: one per agent, plus two more.

Every function: arm64, Python 3.14, the shared runtime layer and code asset, JSON
logs into an explicit log group with the stage's retention, active X-Ray
tracing, and an own role that holds only grants derived from the plan (no
managed policies, no hand-written statements). An agent's API function and its job
worker also publish a version (``currentVersion``, a new one whenever code or
configuration changes; its description names the release, ``STRATUS_RELEASE``) and
serve through the alias ``live``, which CodeDeploy moves (``infra.constructs.release``);
everything that calls them calls the alias (``invocable``). SnapStart is on the API
function's published versions (Python 3.12+; no provisioned concurrency).
The plan is kept on the construct, so ``handler`` and ``environment_names`` can
be read back by the local cloud and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import CfnElement, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from cdk_nag import NagPackSuppression
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.logs import stage_log_group
from infra.constructs.nag_rules import default_policy, suppress
from infra.constructs.runtime_layer import ARCHITECTURE, RUNTIME
from infra.constructs.tables import StratusTables
from infra.definitions import TENANTS
from infra.topology import (
    RELEASE_ENV,
    FunctionPlan,
    JobResources,
    agent_plan,
    authorizer_plan,
    job_function_plans,
    platform_plan,
    release_hook_plans,
    worker_plan,
)
from infra.topology.otel import OTLP_HEADERS_SECRET_ENV
from stratus.agents import AgentSpec

XRAY_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level "
        "permissions; '*' is the only valid resource (added by tracing=ACTIVE)."
    ),
    applies_to=["Resource::*"],
)
SYNC_NO_DLQ = NagPackSuppression(
    id="Serverless-LambdaDLQ",
    reason=(
        "Invoked synchronously by API Gateway only: the error goes back to the caller, "
        "Lambda never retries, so a dead-letter queue would never receive anything."
    ),
)
ALERTS_KEY_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "Publishing to the KMS-encrypted budget alerts topic needs kms:GenerateDataKey* "
        "(GenerateDataKey and its WithoutPlaintext variant, as CDK's grantPublish grants "
        "them), on that one key only."
    ),
    applies_to=["Action::kms:GenerateDataKey*"],
)
QUEUE_CONSUMER_NO_DLQ = NagPackSuppression(
    id="Serverless-LambdaDLQ",
    reason=(
        "Invoked synchronously only (SQS event source mapping, Step Functions Task): a "
        "function DLQ only serves asynchronous invokes. Failed messages go to the source "
        "queue's own DLQ through its redrive policy; failed tasks to the workflow's Catch."
    ),
)
JOBS_KEY_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "Publishing to the KMS-encrypted job events topic needs kms:GenerateDataKey* "
        "(GenerateDataKey and its WithoutPlaintext variant, as CDK's grantPublish grants "
        "them), on that one key only."
    ),
    applies_to=["Action::kms:GenerateDataKey*"],
)


def tenant_keys_index_wildcard(table: Construct) -> NagPackSuppression:
    """CDK's grant on the tenants table also covers its indexes (``<arn>/index/*``)."""
    cfn = table.node.default_child
    assert isinstance(cfn, CfnElement)
    return NagPackSuppression(
        id="AwsSolutions-IAM5",
        reason=(
            "CDK's table grant covers the tenants table's indexes (<arn>/index/*): the "
            "sparse 'tenant_keys' index (a tenant's key items, for listing, revoking, "
            "rotating and suspending); no other table."
        ),
        applies_to=[f"Resource::<{Stack.of(table).get_logical_id(cfn)}.Arn>/index/*"],
    )


HOOK_NO_DLQ = NagPackSuppression(
    id="Serverless-LambdaDLQ",
    reason=(
        "A CodeDeploy lifecycle hook: it reports its outcome with "
        "PutLifecycleEventHookExecutionStatus (Failed on any exception, caught and logged); "
        "an event it never answers fails the deployment at the hook timeout, which rolls "
        "the alias back. A dead-letter queue would hold an event nobody can still answer."
    ),
)
#: Plan kinds that only API Gateway invokes (synchronously).
SYNC_API_KINDS = ("agent", "platform", "authorizer")
#: Plan kinds that publish a version with SnapStart: the agent functions, which prime
#: openai, clients, spec, prompt and prices at init (``stratus.snapstart``). The platform
#: and authorizer functions stay lean and on-demand; workers are queue consumers.
SNAP_START_KINDS = ("agent",)
SNAP_START = lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS
#: Plan kinds that publish versions and serve through the ``live`` alias: an agent's API
#: function and its job worker. Workers get no SnapStart: they consume queues and Step
#: Functions tasks, where nobody waits on a cold start, and a snapshot per version would
#: only add its caching and restore charges.
RELEASED_KINDS = ("agent", "worker")
LIVE_ALIAS = "live"


@dataclass(frozen=True)
class FunctionDeps:
    """What every function is built from: code, layer, stage, tables and the secret."""

    stage: StageConfig
    code: lambda_.Code
    layer: lambda_.ILayerVersion
    tables: StratusTables
    model_secret: secretsmanager.ISecret
    #: The budget alerts topic, granted publish to plans with ``budget_alerts``.
    alerts_topic: sns.ITopic | None = None
    #: Queue URLs, topic, workflow ARNs and callback key of the jobs (``StratusJobs``).
    jobs: JobResources | None = None


class StratusFunction(Construct):
    """One Lambda function for one plan; exposes ``function``, ``role``, ``log_group``."""

    def __init__(
        self, scope: Construct, construct_id: str, *, plan: FunctionPlan, deps: FunctionDeps
    ) -> None:
        super().__init__(scope, construct_id)
        self.plan = plan
        #: The handler path, as the local cloud must import it.
        self.handler = plan.handler
        #: Names of every variable set on the function (values are tokens until deploy).
        self.environment_names = plan.env_names
        self.stratus_environment_names = plan.stratus_env_names

        self.log_group = stage_log_group(self, "Logs", stage=deps.stage)
        # An own role instead of the default one: the default attaches the managed
        # AWSLambdaBasicExecutionRole (logs:* on every group); this one may only
        # write to its own log group.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Stratus {deps.stage.name}: {plan.description}",
        )
        self.log_group.grant_write(self.role)

        self.function = lambda_.Function(
            self,
            "Function",
            description=plan.description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=deps.code,
            handler=plan.handler,
            layers=[deps.layer],
            role=self.role,
            memory_size=plan.memory_mb,
            timeout=Duration.seconds(plan.timeout_s),
            reserved_concurrent_executions=plan.reserved_concurrency,
            environment=plan.environment(
                table_names=deps.tables.table_names,
                model_secret_id=deps.model_secret.secret_arn if plan.model_secret else None,
                jobs=deps.jobs,
            ),
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            snap_start=SNAP_START if plan.kind in SNAP_START_KINDS else None,
            current_version_options=self._version_options(plan),
        )
        #: The published version and the ``live`` alias on it (agent API and worker).
        self.version: lambda_.Version | None = None
        self.alias: lambda_.Alias | None = None
        if plan.kind in RELEASED_KINDS:
            self.version = self.function.current_version
            self.alias = lambda_.Alias(
                self,
                "Live",
                alias_name=LIVE_ALIAS,
                version=self.version,
                description=f"What {plan.key} serves; CodeDeploy shifts it to new versions",
            )
        self._grant(deps)
        self._suppress()

    @property
    def release(self) -> str | None:
        """The release this function serves (``STRATUS_RELEASE``), if it is an agent's."""
        return self.plan.static_env.get(RELEASE_ENV)

    @property
    def invocable(self) -> lambda_.IFunction:
        """What integrations, event sources and workflows call: the ``live`` alias of an
        agent's functions, the function itself for the others."""
        return self.alias if self.alias is not None else self.function

    @staticmethod
    def _version_options(plan: FunctionPlan) -> lambda_.VersionOptions | None:
        release = plan.static_env.get(RELEASE_ENV)
        if plan.kind not in RELEASED_KINDS or not release:
            return None
        return lambda_.VersionOptions(
            description=f"{release} {plan.key}",
            # Old versions stay: the alias (and a rollback) may still point at them.
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _suppress(self) -> None:
        """The function's own cdk-nag suppressions (its role policy and the function)."""
        # Grants land in the role's default policy, and with them the X-Ray statement.
        policy = default_policy(self.role)
        suppress(policy, XRAY_WILDCARD)
        if self.plan.budget_alerts:
            suppress(policy, ALERTS_KEY_WILDCARD)
        if self.plan.publish_jobs_topic and not self.plan.budget_alerts:
            suppress(policy, JOBS_KEY_WILDCARD)
        if self.plan.kind == "release_hook":
            suppress(self.function, HOOK_NO_DLQ)
            return
        sync_api = self.plan.kind in SYNC_API_KINDS
        suppress(self.function, SYNC_NO_DLQ if sync_api else QUEUE_CONSUMER_NO_DLQ)

    def _grant(self, deps: FunctionDeps) -> None:
        for name, access in self.plan.tables.items():
            table = deps.tables.table(name)
            if access == "read_write":
                table.grant_read_write_data(self.function)
            elif access == "read":
                table.grant_read_data(self.function)
            elif access == "write":
                table.grant_write_data(self.function)
            else:
                table.grant(self.function, "dynamodb:DescribeTable")
            if name == TENANTS.name and access != "describe":
                suppress(default_policy(self.role), tenant_keys_index_wildcard(table))
        if self.plan.model_secret:
            deps.model_secret.grant_read(self.function)
        otlp_headers = self.plan.static_env.get(OTLP_HEADERS_SECRET_ENV)
        if otlp_headers:  # the OTLP exporter's headers (stratus.otel), by the stage's name
            secret = secretsmanager.Secret.from_secret_name_v2(self, "OtlpHeaders", otlp_headers)
            secret.grant_read(self.function)
        if self.plan.budget_alerts and deps.alerts_topic is not None:
            deps.alerts_topic.grant_publish(self.function)


class AgentFunction(StratusFunction):
    """The function of one agent, sized and granted from its ``AgentSpec``."""

    def __init__(
        self, scope: Construct, construct_id: str, *, spec: AgentSpec, deps: FunctionDeps
    ) -> None:
        self.spec = spec
        super().__init__(scope, construct_id, plan=agent_plan(spec, deps.stage), deps=deps)


class StratusFunctions(Construct):
    """All functions of the stack: ``platform``, ``authorizer`` and ``agents[name]``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        specs: Mapping[str, AgentSpec],
        deps: FunctionDeps,
    ) -> None:
        super().__init__(scope, construct_id)
        platform = platform_plan(deps.stage, specs if deps.jobs is not None else None)
        authorizer = authorizer_plan(deps.stage)
        self.platform = StratusFunction(self, platform.construct_id, plan=platform, deps=deps)
        self.authorizer = StratusFunction(self, authorizer.construct_id, plan=authorizer, deps=deps)
        self.agents: dict[str, AgentFunction] = {}
        for name in sorted(specs):
            plan = agent_plan(specs[name], deps.stage)
            self.agents[name] = AgentFunction(self, plan.construct_id, spec=specs[name], deps=deps)
        #: The ingest, sweeper and callbacks functions and one job worker per agent
        #: (with jobs only).
        self.ingest: StratusFunction | None = None
        self.job_functions: dict[str, StratusFunction] = {}
        self.workers: dict[str, StratusFunction] = {}
        if deps.jobs is not None:
            for plan in job_function_plans(deps.stage, specs):
                self.job_functions[plan.key] = StratusFunction(
                    self, plan.construct_id, plan=plan, deps=deps
                )
            self.ingest = self.job_functions["ingest"]
            for name in sorted(specs):
                plan = worker_plan(specs[name], deps.stage)
                self.workers[name] = StratusFunction(self, plan.construct_id, plan=plan, deps=deps)
        #: The CodeDeploy pre- and post-traffic hooks (``release:pre_traffic``, ...).
        self.release_hooks: dict[str, StratusFunction] = {
            plan.key: StratusFunction(self, plan.construct_id, plan=plan, deps=deps)
            for plan in release_hook_plans(deps.stage)
        }

    @property
    def released(self) -> dict[str, StratusFunction]:
        """The functions CodeDeploy releases (``agent:<name>``, ``worker:<name>``)."""
        return {k: fn for k, fn in self.by_key.items() if fn.alias is not None}

    @property
    def by_key(self) -> dict[str, StratusFunction]:
        """Functions by plan key (``platform``, ``authorizer``, ``ingest``, ``agent:<name>``,
        ``worker:<name>``)."""
        everything: list[StratusFunction] = [self.platform, self.authorizer, *self.agents.values()]
        everything.extend(self.job_functions.values())
        everything.extend(self.workers.values())
        everything.extend(self.release_hooks.values())
        return {fn.plan.key: fn for fn in everything}

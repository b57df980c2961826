"""``StratusStack``: the tables, the model secret, the functions and the API of one stage.

The agents default to every package under ``functions/agents/``; passing
``agents`` explicitly (tests, tooling) builds the stack for any set of specs,
which is also how a new agent shows up: one more function and its routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import CfnOutput, Environment, Stack, Tags
from constructs import Construct

from functions.agents import load_all
from infra.config import StageConfig
from infra.constructs.agent_function import FunctionDeps, StratusFunctions
from infra.constructs.alerts import BudgetAlerts
from infra.constructs.api import StratusApi
from infra.constructs.dashboard import StratusDashboard
from infra.constructs.flags import StratusFlags
from infra.constructs.function_code import FunctionCode
from infra.constructs.jobs import StratusJobs
from infra.constructs.memory import StratusMemory
from infra.constructs.operator_alarms import OperatorAlarms
from infra.constructs.release import StratusReleases
from infra.constructs.runtime_layer import RuntimeLayer
from infra.constructs.secrets import STORE_KEYS_HOWTO, ModelSecret
from infra.constructs.synthetic import StratusSynthetic
from infra.constructs.tables import StratusTables
from infra.constructs.websocket import StratusWebSocket
from infra.definitions import (
    AUDIT,
    BUDGETS,
    CALLBACK_KEYS,
    IDEMPOTENCY,
    JOBS,
    ORDERS,
    TENANTS,
    USAGE,
)
from infra.topology import api_routes
from stratus.agents import AgentSpec


def stack_name(stage: StageConfig) -> str:
    return f"Stratus-{stage.name}"


class StratusStack(Stack):
    """Everything Stratus deploys for one stage."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        agents: Mapping[str, AgentSpec] | None = None,
        **kwargs: Any,
    ) -> None:
        if stage.account is not None:
            kwargs.setdefault("env", Environment(account=stage.account, region=stage.region))
        super().__init__(
            scope,
            construct_id,
            description=f"Stratus AI agents ({stage.name})",
            termination_protection=stage.deletion_protection,
            **kwargs,
        )
        self.stage_config = stage
        self.agent_specs: dict[str, AgentSpec] = dict(load_all() if agents is None else agents)

        self.tables = StratusTables(self, "Tables", stage=stage)
        self.model_secret = ModelSecret(self, "ModelSecret", stage=stage)
        self.runtime_layer = RuntimeLayer(self, "RuntimeLayer")
        self.function_code = FunctionCode(self, "FunctionCode")
        self.budget_alerts = BudgetAlerts(
            self, "BudgetAlerts", stage=stage, agents=sorted(self.agent_specs)
        )
        self.jobs = StratusJobs(self, "Jobs", stage=stage, specs=self.agent_specs)
        deps = FunctionDeps(
            stage=stage,
            code=self.function_code.code,
            layer=self.runtime_layer.layer,
            tables=self.tables,
            model_secret=self.model_secret.secret,
            alerts_topic=self.budget_alerts.topic,
            jobs=self.jobs.resources,
        )
        self.functions = StratusFunctions(self, "Functions", specs=self.agent_specs, deps=deps)
        self.jobs.connect(self.functions)
        # Long-term memory: the stage's vector index, granted to the functions that use it.
        self.memory = StratusMemory(self, "Memory", stage=stage)
        self.memory.grant(self.functions.by_key.values())
        # Feature flags (issue 19): the stage's AppConfig profile, read by the functions
        # that serve agents (their plans carry STRATUS_FLAGS_*).
        self.flags = StratusFlags(self, "Flags", stage=stage)
        self.flags.grant_read(self.functions.by_key.values())
        self.releases = StratusReleases(self, "Releases", stage=stage, functions=self.functions)
        self.api = StratusApi(
            self,
            "Api",
            stage=stage,
            functions=self.functions,
            routes=api_routes(self.agent_specs),
        )

        self.websocket = StratusWebSocket(
            self, "WebSocket", stage=stage, functions=self.functions, deps=deps
        )

        # Observability (issue 16): the operator topic and alarms (every alarm of the stack
        # notifies it), and the stage's dashboard.
        self.operator_alarms = OperatorAlarms(
            self,
            "OperatorAlarms",
            stage=stage,
            agents=self.agent_specs,
            workflows=self.jobs.workflows,
        )
        self.dashboard = StratusDashboard(
            self,
            "Dashboard",
            stage=stage,
            agents=self.agent_specs,
            queues=self.jobs.queues,
            dlqs=self.jobs.dlqs,
            workflows=self.jobs.workflows,
            api=self.api.api,
        )
        # Synthetic traffic (issue 19): only a stage with ``synthetic`` (staging).
        self.synthetic: StratusSynthetic | None = None
        if stage.synthetic is not None:
            self.synthetic = StratusSynthetic(
                self,
                "Synthetic",
                stage=stage,
                settings=stage.synthetic,
                agents=self.functions.agents,
                deps=deps,
            )
        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the REST API")
        CfnOutput(
            self,
            "WebSocketUrl",
            value=self.websocket.url,
            description="Streamed replies: connect with ?ticket= (POST /v1/stream-tickets)",
        )
        CfnOutput(
            self,
            "ModelSecretArn",
            value=self.model_secret.secret.secret_arn,
            description=STORE_KEYS_HOWTO,
        )
        for output, table in (
            ("TenantsTableName", TENANTS),
            ("IdempotencyTableName", IDEMPOTENCY),
            ("OrdersTableName", ORDERS),
            ("BudgetsTableName", BUDGETS),
            ("UsageTableName", USAGE),
            ("AuditTableName", AUDIT),
            ("CallbackKeysTableName", CALLBACK_KEYS),
        ):
            CfnOutput(
                self,
                output,
                value=self.tables.table(table.name).table_name,
                description=f"{table.env_var}: {table.description}",
            )

        CfnOutput(
            self,
            "IngestQueueUrl",
            value=self.jobs.queues["ingest"].queue_url,
            description="Producer contract v1: send one JSON message per job here",
        )
        CfnOutput(
            self,
            "IngestDlqUrl",
            value=self.jobs.dlqs["ingest"].queue_url,
            description="Messages that broke the producer contract (stratus_reason attribute)",
        )
        CfnOutput(
            self,
            "JobEventsTopicArn",
            value=self.jobs.topic.topic_arn,
            description="One event per finished job (job.succeeded, job.failed, job.cancelled)",
        )
        CfnOutput(
            self,
            "CallbackKeySecretArn",
            value=self.jobs.callback_secret.secret_arn,
            description="HMAC key of X-Stratus-Signature on job callbacks",
        )
        CfnOutput(
            self,
            "JobsTableName",
            value=self.tables.table(JOBS.name).table_name,
            description=f"{JOBS.env_var}: {JOBS.description}",
        )
        for name, agent in sorted(self.functions.agents.items()):
            CfnOutput(
                self,
                "AgentFunction" + "".join(part.title() for part in name.split("_")),
                value=agent.function.function_name,
                description=f"The {name} agent's function (stratus eval --stack ... --version V)",
            )
        for name, worker in sorted(self.functions.workers.items()):
            CfnOutput(
                self,
                "WorkerFunction" + "".join(part.title() for part in name.split("_")),
                value=worker.function.function_name,
                description=f"The {name} agent's job worker (its live alias: stratus rollback)",
            )
        CfnOutput(
            self,
            "ReleasesApplication",
            value=self.releases.application_name,
            description="CodeDeploy application of the agents' live aliases (one group each)",
        )

        Tags.of(self).add("project", "stratus")
        Tags.of(self).add("stratus:stage", stage.name)

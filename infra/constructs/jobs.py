"""Asynchronous jobs: queues with DLQs and alarms, the events topic, the callback key,
the workflows (Standard state machines from ASL files), event sources and grants.

Everything is built from ``infra.topology`` plans (``queue_plans``,
``workflow_plans``, the function plans' job fields), exactly as the local cloud
builds its own, so the two cannot drift:

* every queue has its own DLQ (14 days' retention), SSE, TLS-only access, a
  visibility timeout of six times its consumer's timeout and ``maxReceiveCount``
  from the stage; an alarm fires as soon as a DLQ holds a message;
* the topic is KMS-encrypted (customer key, rotated) and TLS-only;
* each workflow is a Standard state machine (task tokens need Standard) whose
  definition is the ASL file with ``DefinitionSubstitutions``; it logs ALL
  events (with execution data off: prompts stay out of the logs) and traces;
* grants come from the plans only (send, consume, publish, start, respond);
* the lease sweep runs every minute (an EventBridge rule invoking the sweeper
  function, its failed invocations in a DLQ); callback deliveries have their own
  queue, DLQ and alarm like every other queue.

State machine ARNs are formatted from their (fixed) names, so a worker can know
its workflow's ARN while the workflow refers to the worker: no cycle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import Annotations, ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from cdk_nag import NagPackSuppression
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.agent_function import StratusFunction, StratusFunctions
from infra.constructs.logs import RETENTION
from infra.constructs.nag_rules import default_policy, suppress
from infra.definitions import JOBS
from infra.producers import policy_principals
from infra.topology import (
    INGEST_QUEUE,
    SWEEP_INTERVAL_S,
    JobResources,
    QueuePlan,
    WorkflowPlan,
    pascal,
    queue_plans,
    workflow_plans,
)
from stratus.agents import AgentSpec

DLQ_NO_REDRIVE = NagPackSuppression(
    id="Serverless-SQSRedrivePolicy",
    reason=(
        "This queue is itself a dead-letter queue (14 days' retention, alarmed "
        "on its first message); a DLQ of a DLQ would only hide failures."
    ),
)
SQS_MAPPING_NO_DESTINATION = NagPackSuppression(
    id="Serverless-LambdaEventSourceMappingDestination",
    reason=(
        "On-failure destinations exist for stream and Kafka sources only; "
        "for SQS, failed records return to the queue and its redrive policy "
        "moves them to the queue's DLQ after maxReceiveCount."
    ),
)
CALLBACK_KEY_NO_ROTATION = NagPackSuppression(
    id="AwsSolutions-SMG4",
    reason=(
        "An HMAC key shared with every callback receiver: automatic rotation would "
        "break their signature checks without notice. Rotate by agreement with the "
        "receivers (put-secret-value; receivers accept old and new during rollover)."
    ),
)
SWEEP_DLQ_IS_A_DLQ = NagPackSuppression(
    id="AwsSolutions-SQS3",
    reason=(
        "This queue is the dead-letter queue of the lease sweep's EventBridge target "
        "(failed scheduled invocations land here, alarmed on its first message); "
        "it is not a redrive source, so cdk-nag cannot see that it is a DLQ."
    ),
)
STATE_MACHINE_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "X-Ray tracing and CloudWatch Logs delivery of the state machine "
        "(xray:Put*, logs:*LogDelivery*, ...) support no resource-level "
        "permissions; '*' is their only valid resource."
    ),
    applies_to=["Resource::*"],
)


class StratusJobs(Construct):
    """Queues, DLQs and alarms by logical name; ``topic``, ``callback_secret``, ``workflows``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        specs: Mapping[str, AgentSpec],
    ) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        removal = RemovalPolicy.RETAIN if stage.retain else RemovalPolicy.DESTROY
        self.queue_plans = queue_plans(stage, specs)
        self.workflow_plans = workflow_plans(specs)
        self.queues: dict[str, sqs.Queue] = {}
        self.dlqs: dict[str, sqs.Queue] = {}
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for plan in self.queue_plans:
            self._queue(plan, removal)
        self._bind_producers(stage)

        self.topic_key = kms.Key(
            self,
            "TopicKey",
            description=f"Stratus {stage.name}: encrypts the job events topic",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        self.topic = sns.Topic(
            self,
            "Events",
            display_name=f"Stratus {stage.name} job events",
            master_key=self.topic_key,
            enforce_ssl=True,
        )
        self.callback_secret = secretsmanager.Secret(
            self,
            "CallbackKey",
            description=(
                f"Stratus {stage.name}: fallback HMAC-SHA256 key that signs the callbacks "
                "of tenants created before per-tenant keys (stratus callback-key rotate)."
            ),
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({}),
                generate_string_key="key",
                exclude_punctuation=True,
                password_length=48,
            ),
            removal_policy=removal,
        )
        suppress(self.callback_secret, CALLBACK_KEY_NO_ROTATION)
        stack = Stack.of(self)
        self.workflow_arns = {
            plan.agent: stack.format_arn(
                service="states",
                resource="stateMachine",
                resource_name=plan.state_machine_name(stage),
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for plan in self.workflow_plans
        }
        self.resources = JobResources(
            queue_urls={
                **{name: q.queue_url for name, q in self.queues.items()},
                **{f"{name}-dlq": q.queue_url for name, q in self.dlqs.items()},
            },
            topic_arn=self.topic.topic_arn,
            workflow_arns=self.workflow_arns,
            callback_secret_id=self.callback_secret.secret_arn,
            to_json=stack.to_json_string,
        )
        self.workflows: dict[str, sfn.StateMachine] = {}
        self.workflow_logs: dict[str, logs.LogGroup] = {}

    def _bind_producers(self, stage: StageConfig) -> None:
        """The ingest queue admits only the stage's producers (none: the account root).

        An explicit Deny: in the same account an IAM policy alone could otherwise grant
        ``SendMessage``. ``aws:PrincipalArn`` is the role's ARN for its sessions too.
        """
        queue = self.queues.get(INGEST_QUEUE)
        if queue is None:
            return
        stack = Stack.of(self)
        principals = policy_principals(stage.producers) or [
            f"arn:{stack.partition}:iam::{stack.account}:root"
        ]
        send = ["sqs:SendMessage"]
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyBoundProducersSend",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=send,
                resources=[queue.queue_arn],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": principals}},
            )
        )
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="BoundProducersSend",
                principals=[iam.ArnPrincipal(p) for p in principals],
                actions=send,
                resources=[queue.queue_arn],
            )
        )

    def _queue(self, plan: QueuePlan, removal: RemovalPolicy) -> None:
        dlq = sqs.Queue(
            self,
            f"{plan.construct_id}Dlq",
            retention_period=Duration.seconds(plan.dlq_retention_s),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            removal_policy=removal,
        )
        suppress(dlq, DLQ_NO_REDRIVE)
        queue = sqs.Queue(
            self,
            f"{plan.construct_id}Queue",
            visibility_timeout=Duration.seconds(plan.visibility_timeout_s),
            retention_period=Duration.days(4),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=dlq, max_receive_count=plan.max_receive_count
            ),
            removal_policy=removal,
        )
        alarm = self._dlq_alarm(
            f"{plan.construct_id}DlqAlarm",
            dlq,
            f"Messages in the DLQ of {plan.name} ({plan.description}): inspect with "
            f"`stratus dlq list --queue <url>`, fix, then `stratus dlq redrive`.",
        )
        self.queues[plan.name] = queue
        self.dlqs[plan.name] = dlq
        self.alarms[plan.name] = alarm

    def queue(self, name: str) -> sqs.Queue:
        """A queue or DLQ (``<name>-dlq``) by logical name."""
        if name.endswith("-dlq"):
            return self.dlqs[name.removesuffix("-dlq")]
        return self.queues[name]

    def connect(self, functions: StratusFunctions) -> None:
        """Event sources, workflows and grants, once the functions exist."""
        by_key = functions.by_key
        for plan in self.queue_plans:
            if plan.consumer not in by_key:
                Annotations.of(self).add_error(f"no function {plan.consumer} consumes {plan.name}")
                continue
            # An agent's worker consumes through its ``live`` alias (the mapping's
            # FunctionName is the alias ARN), so CodeDeploy shifts its jobs too.
            consumer = by_key[plan.consumer].invocable
            before = {child.node.id for child in consumer.node.children}
            consumer.add_event_source(
                event_sources.SqsEventSource(
                    self.queues[plan.name],
                    batch_size=plan.batch_size,
                    max_batching_window=Duration.seconds(plan.batching_window_s)
                    if plan.batching_window_s
                    else None,
                    report_batch_item_failures=plan.report_batch_item_failures,
                    max_concurrency=plan.max_concurrency,
                )
            )
            for mapping in consumer.node.children:
                if mapping.node.id not in before:
                    suppress(mapping, SQS_MAPPING_NO_DESTINATION)
        for workflow in self.workflow_plans:
            self._workflow(workflow, functions)
        if "sweeper" in by_key:
            self._schedule_sweep(by_key["sweeper"])
        else:
            Annotations.of(self).add_error("no sweeper function: expired job leases stay stuck")
        for fn in by_key.values():
            needs = fn.plan
            for name in needs.send_queues:
                self.queue(name).grant_send_messages(fn.function)
            if needs.publish_jobs_topic:
                self.topic.grant_publish(fn.function)
            if needs.callback_secret:
                self.callback_secret.grant_read(fn.function)
            for agent, access in needs.workflows.items():
                arn = self.workflow_arns[agent]
                executions = arn.replace(":stateMachine:", ":execution:") + ":*"
                if access == "start":
                    actions, resources = ["states:StartExecution"], [arn]
                else:
                    actions = ["states:SendTaskSuccess", "states:SendTaskFailure"]
                    resources = [arn]
                    fn.function.add_to_role_policy(
                        iam.PolicyStatement(
                            actions=["states:StopExecution", "states:DescribeExecution"],
                            resources=[executions],
                        )
                    )
                fn.function.add_to_role_policy(
                    iam.PolicyStatement(actions=actions, resources=resources)
                )
            self._suppress_execution_wildcard(fn)
            self._suppress_jobs_index_wildcard(fn)

    def _schedule_sweep(self, sweeper: StratusFunction) -> None:
        """The lease sweep every ``SWEEP_INTERVAL_S``; invocations that fail go to a DLQ."""
        dlq = sqs.Queue(
            self,
            "SweepDlq",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        suppress(dlq, DLQ_NO_REDRIVE, SWEEP_DLQ_IS_A_DLQ)
        self._dlq_alarm(
            "SweepDlqAlarm", dlq, "Failed lease sweep invocations: check the sweeper's logs."
        )
        self.sweep_dlq = dlq
        self.sweep_rule = events.Rule(
            self,
            "LeaseSweep",
            description=(
                f"Stratus {self.stage.name}: re-queue or fail jobs whose worker lease expired"
            ),
            schedule=events.Schedule.rate(Duration.seconds(SWEEP_INTERVAL_S)),
            targets=[
                targets.LambdaFunction(
                    sweeper.function,
                    dead_letter_queue=dlq,
                    retry_attempts=2,
                    max_event_age=Duration.minutes(5),
                )
            ],
        )

    def _suppress_jobs_index_wildcard(self, fn: StratusFunction) -> None:
        """Table grants cover the jobs table's indexes (``<arn>/index/*``): the lease index."""
        if JOBS.name not in fn.plan.tables:
            return
        stack = Stack.of(self)
        tables = [
            c
            for c in stack.node.find_all()
            if isinstance(c, dynamodb.CfnTable)
            and c.node.scope is not None
            and c.node.scope.node.id == pascal(JOBS.name)
        ]
        if len(tables) != 1:
            return
        suppress(
            default_policy(fn.role),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "CDK's table grant covers the jobs table's indexes (<arn>/index/*): the "
                    "sparse 'leases' index the lease sweep queries; no other table."
                ),
                applies_to=[f"Resource::<{stack.get_logical_id(tables[0])}.Arn>/index/*"],
            ),
        )

    def _suppress_execution_wildcard(self, fn: StratusFunction) -> None:
        """Stopping and describing executions needs a wildcard over one machine's executions."""
        responds = [agent for agent, access in fn.plan.workflows.items() if access == "respond"]
        if not responds:
            return
        names = {plan.agent: plan.state_machine_name(self.stage) for plan in self.workflow_plans}
        suppress(
            default_policy(fn.role),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "StopExecution/DescribeExecution act on executions, named after job ids "
                    "only known at run time; the wildcard covers the executions of the one "
                    "state machine, nothing else."
                ),
                applies_to=[
                    "Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:"
                    f"execution:{names[agent]}:*"
                    for agent in responds
                ],
            ),
        )

    def _workflow(self, plan: WorkflowPlan, functions: StratusFunctions) -> None:
        by_key = functions.by_key
        log_group = logs.LogGroup(
            self,
            f"{plan.construct_id}Logs",
            # The /aws/vendedlogs/ prefix keeps the logs resource policy small.
            log_group_name=f"/aws/vendedlogs/states/{plan.state_machine_name(self.stage)}",
            retention=RETENTION[self.stage.log_retention_days],
            removal_policy=RemovalPolicy.RETAIN if self.stage.retain else RemovalPolicy.DESTROY,
        )
        machine = sfn.StateMachine(
            self,
            plan.construct_id,
            state_machine_name=plan.state_machine_name(self.stage),
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(plan.definition),
            # Task states invoke the worker's ``live`` alias ARN, never $LATEST.
            definition_substitutions={
                var: by_key[key].invocable.function_arn for var, key in plan.functions.items()
            },
            logs=sfn.LogOptions(
                destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
            tracing_enabled=True,
        )
        invoked = [by_key[key] for key in sorted(set(plan.functions.values()))]
        for function in invoked:
            function.invocable.grant_invoke(machine)
        suppress(default_policy(machine.role), STATE_MACHINE_WILDCARD)
        wildcards = [
            f"Resource::<{Stack.of(self).get_logical_id(fn.function.node.default_child)}.Arn>:*"  # type: ignore[arg-type]
            for fn in invoked
            if fn.alias is None
        ]
        if wildcards:  # a bare function's grant covers its versions and aliases (<arn>:*)
            suppress(
                default_policy(machine.role),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Invoking the workflow's function, including its versions and "
                        "aliases (<arn>:*), as CDK's grantInvoke grants; no other function."
                    ),
                    applies_to=wildcards,
                ),
            )
        self.workflows[plan.agent] = machine
        self.workflow_logs[plan.agent] = log_group

    def _dlq_alarm(self, construct_id: str, dlq: sqs.IQueue, description: str) -> cloudwatch.Alarm:
        """An alarm on the first message in ``dlq``."""
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

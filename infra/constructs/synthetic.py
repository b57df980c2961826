"""Synthetic traffic on a stage that sets ``synthetic`` (staging): schedule, function, alarm.

* an EventBridge Scheduler schedule, ``rate(<schedule_minutes> minutes)``, flexible time
  window off (runs are evenly spaced, so "no data" means "did not run"), whose target
  invokes the synthetic function with a retry policy and a dead-letter queue for
  invocations the scheduler could not deliver (alarmed on its first message); its own
  role may invoke that one function only;
* the function (``functions.handlers.synthetic``, :mod:`stratus.synthetic`): runs the
  scenario against every agent's ``live`` alias; it may invoke exactly those aliases;
  Lambda does not retry it (a retry would run a past scenario again and count twice),
  and a run that crashes or times out (no metrics) lands in the same alarmed DLQ;
* an alarm on ``SyntheticFailures`` (>= 1 over two schedule intervals), missing data
  treated as breaching: a failed case and a scenario that stopped running both alarm.
  The operator aspect (``infra.constructs.operator_alarms``) gives it the topic's actions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression
from constructs import Construct

from infra.config import StageConfig, SyntheticSettings
from infra.constructs.agent_function import XRAY_WILDCARD, FunctionDeps, StratusFunction
from infra.constructs.logs import stage_log_group
from infra.constructs.nag_rules import default_policy, suppress
from infra.constructs.runtime_layer import ARCHITECTURE, RUNTIME
from infra.topology import POWERTOOLS_ENV
from stratus.synthetic import CONFIG_ENV, FAILURE_METRIC, SUCCESS_METRIC

HANDLER = "functions.handlers.synthetic.lambda_handler"
TIMEOUT_S = 300
#: Deliveries the scheduler retries before the event goes to its DLQ.
SCHEDULE_RETRIES = 2

SCHEDULED_NO_DLQ = NagPackSuppression(
    id="Serverless-LambdaDLQ",
    reason=(
        "Invoked asynchronously by its schedule only, with Lambda retries off: a failed "
        "invocation (a crash or timeout too) goes to the on-failure destination, the "
        "schedule's alarmed DLQ, which serves both; a failed case is also counted in "
        "SyntheticFailures. A function DLQ (DeadLetterConfig) would duplicate that queue."
    ),
)
SCHEDULE_DLQ_NO_REDRIVE = NagPackSuppression(
    id="Serverless-SQSRedrivePolicy",
    reason=(
        "This queue is itself the dead-letter queue of the synthetic schedule's target "
        "(14 days' retention, alarmed on its first message); a DLQ of a DLQ would hide it."
    ),
)
SCHEDULE_DLQ_IS_A_DLQ = NagPackSuppression(
    id="AwsSolutions-SQS3",
    reason=(
        "This queue is the dead-letter queue of the synthetic schedule's Lambda target "
        "(undeliverable invocations) and the function's on-failure destination (failed "
        "runs); it is not a redrive source, so cdk-nag cannot see that it is a DLQ."
    ),
)


def synthetic_metric(
    name: str, stage: StageConfig, settings: SyntheticSettings
) -> cloudwatch.Metric:
    """The scenario-wide count (dimension ``scenario``), summed over two intervals."""
    return cloudwatch.Metric(
        namespace=POWERTOOLS_ENV["POWERTOOLS_METRICS_NAMESPACE"],
        metric_name=name,
        dimensions_map={"scenario": settings.scenario},
        statistic="Sum",
        period=Duration.minutes(2 * settings.schedule_minutes),
    )


class StratusSynthetic(Construct):
    """The schedule, the function and the alarm of the stage's synthetic traffic."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        settings: SyntheticSettings,
        agents: Mapping[str, StratusFunction],
        deps: FunctionDeps,
    ) -> None:
        super().__init__(scope, construct_id)
        aliases = {name: fn.alias for name, fn in agents.items() if fn.alias is not None}
        if not aliases:
            raise ValueError("synthetic traffic needs at least one agent with a live alias")
        self.log_group = stage_log_group(self, "Logs", stage=stage)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Stratus {stage.name}: synthetic traffic against the live aliases",
        )
        self.log_group.grant_write(self.role)
        config = {
            "scenario": settings.scenario,
            "functions": {name: agents[name].function.function_name for name in aliases},
        }
        self.dlq = sqs.Queue(
            self,
            "ScheduleDlq",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=f"Stratus {stage.name}: synthetic {settings.scenario} scenario",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=deps.code,
            handler=HANDLER,
            layers=[deps.layer],
            role=self.role,
            memory_size=512,
            timeout=Duration.seconds(TIMEOUT_S),
            environment={
                "STRATUS_STAGE": stage.name,
                **POWERTOOLS_ENV,
                CONFIG_ENV: Stack.of(self).to_json_string(config),
            },
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            retry_attempts=0,
            on_failure=destinations.SqsDestination(self.dlq),
        )
        # The live aliases, by their exact ARNs: no version, no other function.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[alias.function_arn for alias in aliases.values()],
            )
        )
        # The schedule's own role (not CDK's stack-wide one), so its grant and the
        # suppression of that grant's <arn>:* live here; only this account's schedules.
        stack = Stack.of(self)
        self.schedule_role = iam.Role(
            self,
            "ScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description=f"Stratus {stage.name}: the synthetic schedule invokes its function",
        )
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description=f"Stratus {stage.name}: synthetic {settings.scenario} traffic",
            schedule=scheduler.ScheduleExpression.rate(Duration.minutes(settings.schedule_minutes)),
            time_window=scheduler.TimeWindow.off(),
            target=targets.LambdaInvoke(
                self.function,
                dead_letter_queue=self.dlq,
                role=self.schedule_role,
                retry_attempts=SCHEDULE_RETRIES,
                max_event_age=Duration.minutes(settings.schedule_minutes),
                input=scheduler.ScheduleTargetInput.from_text(
                    json.dumps({"scenario": settings.scenario})
                ),
            ),
        )
        self.failures_alarm = cloudwatch.Alarm(
            self,
            "FailuresAlarm",
            alarm_description=(
                f"Synthetic {settings.scenario} traffic on {stage.name} failed, or did not run "
                "(no data): check the synthetic function's logs and the agents' live aliases."
            ),
            metric=synthetic_metric(FAILURE_METRIC, stage, settings),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self.dlq_alarm = cloudwatch.Alarm(
            self,
            "ScheduleDlqAlarm",
            alarm_description=(
                "The scheduler could not invoke the synthetic function, or a run crashed or "
                "timed out: the messages say which; check the function's logs."
            ),
            metric=self.dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        #: Both counts, for a dashboard.
        self.metrics = {
            name: synthetic_metric(name, stage, settings)
            for name in (SUCCESS_METRIC, FAILURE_METRIC)
        }
        suppress(self.function, SCHEDULED_NO_DLQ)
        suppress(default_policy(self.role), XRAY_WILDCARD)
        suppress(self.dlq, SCHEDULE_DLQ_NO_REDRIVE, SCHEDULE_DLQ_IS_A_DLQ)
        logical = stack.get_logical_id(self.function.node.default_child)  # type: ignore[arg-type]
        suppress(
            default_policy(self.schedule_role),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "CDK's grantInvoke on the synthetic function covers its versions and "
                    "aliases (<arn>:*); the schedule's role may invoke no other function."
                ),
                applies_to=[f"Resource::<{logical}.Arn>:*"],
            ),
        )

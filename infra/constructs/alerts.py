"""Budget alerts: an encrypted SNS topic, and CloudWatch alarms on the cost metric.

The functions publish one message per budget threshold per period to the topic
(``stratus.budgets``); independently, one alarm per agent watches the
``CostMicroUSD`` metric the functions emit (dimensions ``agent`` and
``service``) and notifies the same topic when an hour's spend passes
``COST_ALARM_USD_PER_HOUR``. The topic is encrypted with a customer-managed key
(CloudWatch cannot publish to a topic under the AWS-managed SNS key) and
refuses requests that are not TLS.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.config import StageConfig
from infra.topology import POWERTOOLS_ENV, alerts_topic_name

#: An agent's spend per hour that raises its cost alarm (a backstop to the budgets).
COST_ALARM_USD_PER_HOUR = 5


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class BudgetAlerts(Construct):
    """``topic`` (granted publish to every model-calling function) and ``alarms``."""

    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, agents: Iterable[str]
    ) -> None:
        super().__init__(scope, construct_id)
        self.key, self.topic = encrypted_alarm_topic(
            self, stage, topic_name=alerts_topic_name(stage), purpose="budget alerts"
        )
        namespace = POWERTOOLS_ENV["POWERTOOLS_METRICS_NAMESPACE"]
        service = POWERTOOLS_ENV["POWERTOOLS_SERVICE_NAME"]
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for agent in sorted(agents):
            metric = cloudwatch.Metric(
                namespace=namespace,
                metric_name="CostMicroUSD",
                dimensions_map={"agent": agent, "service": service},
                statistic="Sum",
                period=Duration.hours(1),
            )
            alarm = metric.create_alarm(
                self,
                f"Cost{_pascal(agent)}",
                alarm_description=(
                    f"Stratus {stage.name}: agent {agent} spent more than "
                    f"{COST_ALARM_USD_PER_HOUR} USD in an hour"
                ),
                threshold=COST_ALARM_USD_PER_HOUR * 1_000_000,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))
            self.alarms[agent] = alarm


def encrypted_alarm_topic(
    scope: Construct, stage: StageConfig, *, topic_name: str, purpose: str
) -> tuple[kms.Key, sns.Topic]:
    """An SNS topic under a customer-managed key (CloudWatch alarm actions cannot publish
    to a topic under the AWS-managed SNS key) that refuses requests without TLS."""
    key = kms.Key(
        scope,
        "Key",
        description=f"Stratus {stage.name}: encrypts the {purpose} topic",
        enable_key_rotation=True,
        removal_policy=RemovalPolicy.RETAIN if stage.retain else RemovalPolicy.DESTROY,
    )
    # CloudWatch alarm actions publish to the topic with this key.
    key.add_to_resource_policy(
        iam.PolicyStatement(
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],
        )
    )
    topic = sns.Topic(
        scope,
        "Topic",
        topic_name=topic_name,
        display_name=f"Stratus {stage.name} {purpose}",
        master_key=key,
        enforce_ssl=True,
    )
    return key, topic

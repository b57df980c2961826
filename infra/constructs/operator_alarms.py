"""Operator alarms: an encrypted SNS topic per stage, and every alarm of the stack on it.

* ``topic``: ``stratus-<stage>-operators``, encrypted with its own customer-managed key
  (CloudWatch cannot publish to a topic under the AWS-managed SNS key), TLS only; the
  stage's ``operator_subscriptions`` (``cdk.json``) subscribe to it.
* per agent: the error rate (metric math on ``Errors`` / ``Requests``), the p90 of
  ``LatencyMs``, and token and cost spikes (CloudWatch anomaly detection: an
  ``AWS::CloudWatch::AnomalyDetector`` and an alarm on ``ANOMALY_DETECTION_BAND``);
  the ``agent_day`` budget burn (``BudgetBurnPct``);
* per workflow: ``ExecutionsFailed`` >= 1; for the stage: ``BreakerOpens`` >= 1 and the
  ``global_day`` budget burn.
* every ``AWS::CloudWatch::Alarm`` of the stack (the DLQ first-message alarms, the
  budget cost alarms, the release rollback alarms, these, and any a later construct
  adds) notifies the topic on ALARM and on OK: an aspect adds the actions at synthesis,
  so no alarm is left without one (``tests/infra/test_observability_template.py``).

The metrics are :mod:`stratus.task_metrics`'s (namespace and service from
``POWERTOOLS_ENV``).
"""

from __future__ import annotations

from collections.abc import Mapping

import jsii
from aws_cdk import AspectPriority, Aspects, Duration, IAspect, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from cdk_nag import NagPackSuppression
from constructs import Construct, IConstruct

from infra.config import StageConfig
from infra.constructs.alerts import encrypted_alarm_topic
from infra.constructs.nag_rules import suppress
from infra.topology import POWERTOOLS_ENV, pascal
from stratus.agents import AgentSpec

#: Error rate (percent of requests, over ``PERIOD``) that raises an agent's alarm.
ERROR_RATE_ALARM_PCT = 5
#: Budget burn (percent of the day's limit) that raises the budget alarms.
BUDGET_BURN_ALARM_PCT = 80
#: Width of the anomaly detection band (standard deviations).
ANOMALY_BAND_WIDTH = 3
PERIOD = Duration.minutes(5)

SUBSCRIPTION_NO_DLQ = NagPackSuppression(
    id="Serverless-SNSRedrivePolicy",
    reason=(
        "An operator endpoint (email, chat webhook) is notified of alarm state changes; "
        "a notification it could not take stays visible as the alarm's state and history, "
        "and a dead-letter queue would itself need an alarm on this same topic."
    ),
)

NAMESPACE = POWERTOOLS_ENV["POWERTOOLS_METRICS_NAMESPACE"]
SERVICE = POWERTOOLS_ENV["POWERTOOLS_SERVICE_NAME"]


def operator_topic_name(stage: StageConfig) -> str:
    return f"stratus-{stage.name}-operators"


def task_metric(
    name: str, agent: str | None = None, statistic: str = "Sum", **dims: str
) -> cloudwatch.Metric:
    """A :mod:`stratus.task_metrics` metric (dimensions ``service`` + ``agent`` + ``dims``)."""
    dimensions = {"service": SERVICE, **({"agent": agent} if agent else {}), **dims}
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=PERIOD,
    )


@jsii.implements(IAspect)
class RouteAlarms:
    """Adds the operator topic as ALARM and OK action of every alarm it visits."""

    def __init__(self, topic: sns.ITopic) -> None:
        self.topic = topic
        self.action = cloudwatch_actions.SnsAction(topic)

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, cloudwatch.Alarm):
            node.add_alarm_action(self.action)
            node.add_ok_action(self.action)
        elif isinstance(node, cloudwatch.CfnAlarm) and not node.alarm_actions:
            # An L1 alarm built without actions (the L2 ones are handled above).
            node.alarm_actions = [self.topic.topic_arn]
            node.ok_actions = [self.topic.topic_arn]


class OperatorAlarms(Construct):
    """``topic``, ``alarms`` (by name) and ``anomaly_detectors``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        agents: Mapping[str, AgentSpec],
        workflows: Mapping[str, sfn.IStateMachine],
    ) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.key, self.topic = encrypted_alarm_topic(
            self, stage, topic_name=operator_topic_name(stage), purpose="operator alarms"
        )
        for index, sub in enumerate(stage.operator_subscriptions):
            subscription = sns.Subscription(
                self,
                f"Subscription{index}",
                topic=self.topic,
                protocol=sns.SubscriptionProtocol(sub.protocol.upper().replace("-", "_")),
                endpoint=sub.endpoint,
            )
            suppress(subscription, SUBSCRIPTION_NO_DLQ)
        self.alarms: dict[str, cloudwatch.Alarm | cloudwatch.CfnAlarm] = {}
        self.anomaly_detectors: dict[str, cloudwatch.CfnAnomalyDetector] = {}
        for name, spec in sorted(agents.items()):
            self._agent_alarms(name, spec)
        for agent, machine in sorted(workflows.items()):
            self._alarm(
                f"WorkflowFailed{pascal(agent)}",
                machine.metric_failed(period=PERIOD, statistic="Sum"),
                threshold=1,
                description=f"A {agent} workflow execution failed (ExecutionsFailed >= 1)",
            )
        self._alarm(
            "BreakerOpen",
            task_metric("BreakerOpens"),
            threshold=1,
            description="A model's circuit breaker opened (BreakerOpens >= 1)",
        )
        self._alarm(
            "BudgetGlobalDay",
            task_metric("BudgetBurnPct", statistic="Maximum", scope="global_day"),
            threshold=BUDGET_BURN_ALARM_PCT,
            description=f"The global daily budget is {BUDGET_BURN_ALARM_PCT}% spent",
        )
        Aspects.of(Stack.of(self)).add(RouteAlarms(self.topic), priority=AspectPriority.MUTATING)

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"Stratus {self.stage.name}: {description}",
        )
        self.alarms[construct_id] = alarm
        return alarm

    def _agent_alarms(self, agent: str, spec: AgentSpec) -> None:
        label = pascal(agent)
        error_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={
                "errors": task_metric("Errors", agent),
                "requests": task_metric("Requests", agent),
            },
            label=f"{agent} error rate (%)",
            period=PERIOD,
        )
        self._alarm(
            f"ErrorRate{label}",
            error_rate,
            threshold=ERROR_RATE_ALARM_PCT,
            evaluation_periods=2,
            description=f"agent {agent}: more than {ERROR_RATE_ALARM_PCT}% of requests failed",
        )
        p90_ms = self.stage.deployment.max_p90_latency_ms or int(
            spec.deployment.timeout_s * 1000 * 0.8
        )
        self._alarm(
            f"LatencyP90{label}",
            task_metric("LatencyMs", agent, statistic="p90"),
            threshold=p90_ms,
            evaluation_periods=2,
            description=f"agent {agent}: p90 latency over {p90_ms} ms",
        )
        self._anomaly_alarm(agent, "OutputTokens", "TokenSpike", "unexpected token usage")
        self._anomaly_alarm(agent, "CostMicroUSD", "CostSpike", "unexpected spend")
        self._alarm(
            f"BudgetAgentDay{label}",
            task_metric("BudgetBurnPct", agent, statistic="Maximum", scope="agent_day"),
            threshold=BUDGET_BURN_ALARM_PCT,
            description=f"agent {agent}: its daily budget is {BUDGET_BURN_ALARM_PCT}% spent",
        )

    def _anomaly_alarm(self, agent: str, metric_name: str, kind: str, what: str) -> None:
        """An anomaly detector on ``metric_name`` (Sum) and an alarm above its band."""
        construct_id = f"{kind}{pascal(agent)}"
        dimensions = [
            cloudwatch.CfnAnomalyDetector.DimensionProperty(name="agent", value=agent),
            cloudwatch.CfnAnomalyDetector.DimensionProperty(name="service", value=SERVICE),
        ]
        self.anomaly_detectors[construct_id] = cloudwatch.CfnAnomalyDetector(
            self,
            f"{construct_id}Detector",
            namespace=NAMESPACE,
            metric_name=metric_name,
            dimensions=dimensions,
            stat="Sum",
        )
        alarm = cloudwatch.CfnAlarm(
            self,
            construct_id,
            alarm_description=(
                f"Stratus {self.stage.name}: agent {agent}: {what} ({metric_name} above "
                f"its anomaly detection band)"
            ),
            comparison_operator="GreaterThanUpperThreshold",
            evaluation_periods=2,
            datapoints_to_alarm=2,
            threshold_metric_id="band",
            treat_missing_data="notBreaching",
            metrics=[
                cloudwatch.CfnAlarm.MetricDataQueryProperty(
                    id="m1",
                    return_data=True,
                    metric_stat=cloudwatch.CfnAlarm.MetricStatProperty(
                        metric=cloudwatch.CfnAlarm.MetricProperty(
                            namespace=NAMESPACE,
                            metric_name=metric_name,
                            dimensions=[
                                cloudwatch.CfnAlarm.DimensionProperty(name="agent", value=agent),
                                cloudwatch.CfnAlarm.DimensionProperty(
                                    name="service", value=SERVICE
                                ),
                            ],
                        ),
                        period=int(PERIOD.to_seconds()),
                        stat="Sum",
                    ),
                ),
                cloudwatch.CfnAlarm.MetricDataQueryProperty(
                    id="band",
                    expression=f"ANOMALY_DETECTION_BAND(m1, {ANOMALY_BAND_WIDTH})",
                    label=f"{metric_name} (expected)",
                    return_data=True,
                ),
            ],
            alarm_actions=[self.topic.topic_arn],
            ok_actions=[self.topic.topic_arn],
        )
        alarm.node.add_dependency(self.anomaly_detectors[construct_id])
        self.alarms[construct_id] = alarm

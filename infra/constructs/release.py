"""Releases on AWS: CodeDeploy shifts each agent function's ``live`` alias, gated and alarmed.

Per released function (an agent's API function and its job worker, see
``StratusFunction.alias``) one ``LambdaDeploymentGroup`` in one CodeDeploy
application per stage, with:

* the stage's traffic shift (``cdk.json`` ``deployment.config``: dev all at once,
  prod canary 10% for 5 minutes, or linear);
* automatic rollback when the deployment fails, is stopped, or one of its alarms
  fires. The alarms watch the NEW version (they are rebuilt on every release):
  its error rate (``Errors / Invocations`` of that version), its p90 ``Duration``,
  the release's cost per task (``CostMicroUSD / Tasks / 1e6`` over ``agent`` +
  ``release``) and its eval score (``EvalScore`` over ``agent`` + ``release``), with
  the stage's ``release_gate`` thresholds. An alarm cannot name the stable release
  (it is only known while deploying), so the comparison with the old version is
  the post-traffic hook's;
* the shared pre- and post-traffic hooks (``infra.topology.releases``).

A worker's alias moves only after the API function's (a CloudFormation
dependency): its pre-traffic hook then judges the eval score the API function's
hook has just published for the same release.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Duration, Fn, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from cdk_nag import NagPackSuppression
from constructs import Construct

from infra.config import DeploymentConfigName, StageConfig
from infra.constructs.agent_function import StratusFunction, StratusFunctions
from infra.constructs.nag_rules import default_policy, suppress
from infra.topology import pascal

NAMESPACE = "Stratus"
COST_METRIC = "CostMicroUSD"
TASKS_METRIC = "Tasks"
EVAL_SCORE_METRIC = "EvalScore"
#: ``cdk.json`` name -> CodeDeploy's predefined configuration.
DEPLOYMENT_CONFIGS: Mapping[DeploymentConfigName, codedeploy.ILambdaDeploymentConfig] = {
    "all_at_once": codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE,
    "canary_10_5": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    "canary_10_10": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_10_MINUTES,
    "canary_10_15": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_15_MINUTES,
    "canary_10_30": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_30_MINUTES,
    "linear_10_1": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_1_MINUTE,
    "linear_10_2": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_2_MINUTES,
    "linear_10_3": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_3_MINUTES,
    "linear_10_10": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_10_MINUTES,
}
#: The alarm kinds every deployment group carries.
ALARM_KINDS = ("errors", "latency", "cost_per_task", "eval_score")

CODEDEPLOY_MANAGED_ROLE = NagPackSuppression(
    id="AwsSolutions-IAM4",
    reason=(
        "CodeDeploy's Lambda deployment role carries the AWS-managed "
        "AWSCodeDeployRoleForLambdaLimited policy (alias updates, hook invocations, "
        "alarm reads), the documented setup; it is assumed by codedeploy.amazonaws.com only."
    ),
    applies_to=[
        "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
        "AWSCodeDeployRoleForLambdaLimited"
    ],
)
METRICS_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "cloudwatch:GetMetricData and PutMetricData support no resource-level permissions; "
        "PutMetricData is limited to the Stratus namespace by the cloudwatch:namespace "
        "condition."
    ),
    applies_to=["Resource::*"],
)


def _versions_wildcard(fn: StratusFunction) -> str:
    logical = Stack.of(fn).get_logical_id(fn.function.node.default_child)  # type: ignore[arg-type]
    return f"Resource::<{logical}.Arn>:*"


def _nag(value: str, pseudo: str) -> str:
    """How cdk-nag writes a stack attribute: ``<AWS::Region>`` while it is a token, the
    value itself in a stack pinned to a region (``infra.app``'s regional stacks)."""
    return f"<AWS::{pseudo}>" if Token.is_unresolved(value) else value


class StratusReleases(Construct):
    """``application``, ``groups`` and ``alarms`` (by plan key, then alarm kind)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        functions: StratusFunctions,
    ) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.pre_hook = functions.release_hooks["release:pre_traffic"]
        self.post_hook = functions.release_hooks["release:post_traffic"]
        self.application_name = f"stratus-{stage.name}"
        self.application = codedeploy.LambdaApplication(
            self, "Application", application_name=self.application_name
        )
        # One service role for every deployment group (CDK would make one per group).
        self.role = iam.Role(
            self,
            "DeploymentRole",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            description=f"Stratus {stage.name}: CodeDeploy shifts the agents' live aliases",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AWSCodeDeployRoleForLambdaLimited"
                )
            ],
        )
        suppress(self.role, CODEDEPLOY_MANAGED_ROLE)
        released = functions.released
        self.groups: dict[str, codedeploy.LambdaDeploymentGroup] = {}
        self.alarms: dict[str, dict[str, cloudwatch.Alarm]] = {}
        per_agent: dict[str, dict[str, cloudwatch.Alarm]] = {}
        for key in sorted(released):
            fn = released[key]
            agent = fn.plan.agent or ""
            if agent not in per_agent:
                per_agent[agent] = self._release_alarms(agent, fn.release or "")
            alarms = {**self._version_alarms(fn), **per_agent[agent]}
            self.alarms[key] = alarms
            self.groups[key] = self._group(fn, alarms)
        for name, worker in functions.workers.items():
            api = functions.agents.get(name)
            if worker.alias is not None and api is not None and api.alias is not None:
                worker.alias.node.add_dependency(api.alias)
        self._grant_hooks(released)
        suppress(
            default_policy(self.role),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "CodeDeploy invokes the two release hook functions (CDK's grantInvoke "
                    "covers their versions and aliases, <arn>:*); no other function."
                ),
                applies_to=[_versions_wildcard(h) for h in (self.pre_hook, self.post_hook)],
            ),
        )

    # -- alarms --------------------------------------------------------------------------

    def _period(self) -> Duration:
        return Duration.seconds(self.stage.deployment.alarm_period_s)

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        below: bool = False,
        description: str,
    ) -> cloudwatch.Alarm:
        comparison = (
            cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
            if below
            else cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        )
        return cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=self.stage.deployment.alarm_evaluation_periods,
            # No traffic, no eval yet: nothing to judge, not a reason to roll back.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )

    def _version_alarms(self, fn: StratusFunction) -> dict[str, cloudwatch.Alarm]:
        """Error rate and p90 latency of the function's new version."""
        version = fn.version
        assert version is not None
        gate, period = self.stage.release_gate, self._period()
        prefix = pascal(fn.plan.key.replace(":", "_"))
        # Lambda publishes per-version metrics under FunctionName + Resource
        # (``name:version``); CDK's Version.metric_* would put ``name:version`` in
        # FunctionName alone, which matches no data.
        name = fn.function.function_name
        dims = {"FunctionName": name, "Resource": Fn.join(":", [name, version.version])}

        def lambda_metric(metric_name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/Lambda",
                metric_name=metric_name,
                dimensions_map=dims,
                statistic=statistic,
                period=period,
            )

        errors = cloudwatch.MathExpression(
            expression="IF(invocations > 0, errors / invocations, 0)",
            using_metrics={
                "errors": lambda_metric("Errors", "Sum"),
                "invocations": lambda_metric("Invocations", "Sum"),
            },
            label=f"{fn.plan.key} new version error rate",
            period=period,
        )
        latency_ms = self.stage.deployment.max_p90_latency_ms or int(fn.plan.timeout_s * 800)
        return {
            "errors": self._alarm(
                f"{prefix}ErrorRate",
                errors,
                threshold=gate.max_error_rate,
                description=(
                    f"{fn.plan.key}: the new version's error rate is above "
                    f"{gate.max_error_rate:.2%}; CodeDeploy rolls the live alias back."
                ),
            ),
            "latency": self._alarm(
                f"{prefix}P90Latency",
                lambda_metric("Duration", "p90"),
                threshold=latency_ms,
                description=(
                    f"{fn.plan.key}: the new version's p90 duration is above {latency_ms} ms; "
                    "CodeDeploy rolls the live alias back."
                ),
            ),
        }

    def _release_alarms(self, agent: str, release: str) -> dict[str, cloudwatch.Alarm]:
        """Cost per task and eval score of the agent's new release (``agent`` + ``release``)."""
        gate, period = self.stage.release_gate, self._period()
        dims = {"agent": agent, "release": release}

        def metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=NAMESPACE,
                metric_name=name,
                dimensions_map=dims,
                statistic=statistic,
                period=period,
            )

        cost = cloudwatch.MathExpression(
            expression="IF(tasks > 0, cost / tasks / 1000000, 0)",
            using_metrics={
                "cost": metric(COST_METRIC, "Sum"),
                "tasks": metric(TASKS_METRIC, "Sum"),
            },
            label=f"{agent} {release} cost per task (USD)",
            period=period,
        )
        assert gate.max_cost_per_task_usd is not None and gate.min_eval_score is not None
        prefix = pascal(agent)
        return {
            "cost_per_task": self._alarm(
                f"{prefix}CostPerTask",
                cost,
                threshold=gate.max_cost_per_task_usd,
                description=(
                    f"{agent} release {release}: cost per task above "
                    f"${gate.max_cost_per_task_usd}; CodeDeploy rolls the live aliases back."
                ),
            ),
            "eval_score": self._alarm(
                f"{prefix}EvalScore",
                metric(EVAL_SCORE_METRIC, "Minimum"),
                threshold=gate.min_eval_score,
                below=True,
                description=(
                    f"{agent} release {release}: eval score below {gate.min_eval_score}; "
                    "CodeDeploy rolls the live aliases back."
                ),
            ),
        }

    # -- deployment groups and hooks ----------------------------------------------------------

    def _group(
        self, fn: StratusFunction, alarms: Mapping[str, cloudwatch.Alarm]
    ) -> codedeploy.LambdaDeploymentGroup:
        assert fn.alias is not None
        group = codedeploy.LambdaDeploymentGroup(
            self,
            pascal(fn.plan.key.replace(":", "_")) + "Deployment",
            application=self.application,
            alias=fn.alias,
            deployment_config=DEPLOYMENT_CONFIGS[self.stage.deployment.config],
            alarms=[alarms[kind] for kind in ALARM_KINDS],
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
            pre_hook=self.pre_hook.function,
            post_hook=self.post_hook.function,
            role=self.role,
        )
        return group

    def _grant_hooks(self, released: Mapping[str, StratusFunction]) -> None:
        """Least privilege: the released functions' versions, the groups, the metrics."""
        stack = Stack.of(self)
        version_arns = [f"{fn.function.function_arn}:*" for fn in released.values()]
        group_arns = [group.deployment_group_arn for group in self.groups.values()]
        deployments = stack.format_arn(
            service="codedeploy",
            resource="deploymentgroup",
            resource_name=f"{self.application_name}/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for hook in (self.pre_hook, self.post_hook):
            role = hook.role
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"],
                    resources=version_arns,
                )
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["codedeploy:GetDeployment", "codedeploy:GetDeploymentTarget"],
                    resources=group_arns,
                )
            )
            # ListDeploymentTargets is authorized on the deployment group ARN pattern.
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["codedeploy:ListDeploymentTargets"], resources=[deployments]
                )
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"])
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
                )
            )
            suppress(
                default_policy(role),
                METRICS_WILDCARD,
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Invoking and reading the configuration of the agent functions' "
                        "versions (<arn>:*: a new version number per release, known only "
                        "while deploying); no other function."
                    ),
                    applies_to=[_versions_wildcard(fn) for fn in released.values()],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "ListDeploymentTargets on this stage's CodeDeploy application's "
                        "deployment groups only (the deployment id is known at run time)."
                    ),
                    applies_to=[
                        f"Resource::arn:{_nag(stack.partition, 'Partition')}:codedeploy:"
                        f"{_nag(stack.region, 'Region')}:{_nag(stack.account, 'AccountId')}:"
                        f"deploymentgroup:{self.application_name}/*"
                    ],
                ),
            )

"""Feature flags (issue 19): the stage's AppConfig application, profile and first version.

* ``AWS::AppConfig::Application`` ``stratus-<stage>`` with one environment named after
  the stage (names from :mod:`infra.topology.flags`, the same on the local cloud).
* The configuration profile ``flags``: hosted and freeform (``AWS.Freeform``), which is
  what Powertools' ``AppConfigStore`` reads (``AWS.AppConfig.FeatureFlags`` is another
  format), with a ``JSON_SCHEMA`` validator from ``stratus/data/flags.schema.json``, so
  AppConfig itself refuses a version that is not a valid flag document.
* A deployment strategy from the stage's ``flags.strategy`` (dev: all at once; prod:
  linear steps and a bake time), used by the first deployment and by ``stratus flags
  set --stack`` (the ``FlagsDeploymentStrategyId`` output).
* The first hosted version, the default document ``stratus/data/flags.json``, deployed
  to the environment. Only a change of that file makes CloudFormation deploy it again
  (and then it replaces what operators set; ``stratus flags set-all`` puts it back).

:meth:`StratusFlags.grant_read` gives each function whose plan carries the
``STRATUS_FLAGS_*`` variables exactly the two AppConfigData actions on this
application's environment's profile ARN, nothing wider. No idle cost: AppConfig bills
configuration requests, nothing per hour.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_appconfig as appconfig
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.agent_function import StratusFunction
from infra.topology.flags import (
    CONTENT_TYPE,
    FLAGS_APPLICATION_ENV,
    FLAGS_ENV_NAMES,
    HOSTED_LOCATION,
    PROFILE_TYPE,
    READ_ACTIONS,
    application_name,
    default_document,
    document_text,
    environment_name,
    flags_names,
    plan_reads_flags,
    schema_text,
)

#: AppConfig's limit on a validator's content.
MAX_VALIDATOR_CHARS = 32_768


class Steps(NamedTuple):
    """An ``AWS::AppConfig::DeploymentStrategy``'s growth, duration and bake time."""

    growth_factor: float
    duration_minutes: int
    bake_minutes: int


def strategy_steps(name: str, bake_minutes: int) -> Steps:
    """The strategy of a stage's ``flags.strategy`` name (``linear_<percent>_<minutes>``)."""
    if name == "all_at_once":
        return Steps(100.0, 0, bake_minutes)
    kind, percent, minutes = name.split("_")
    if kind != "linear":
        raise ValueError(f"unknown flags strategy {name!r}")
    return Steps(float(percent), int(minutes), bake_minutes)


class StratusFlags(Construct):
    """The application, environment, profile, strategy and first deployment of a stage."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.names = flags_names(stage)
        validator = schema_text()
        if len(validator) > MAX_VALIDATOR_CHARS:
            raise ValueError(f"flags.schema.json is over AppConfig's {MAX_VALIDATOR_CHARS} chars")

        self.application = appconfig.CfnApplication(
            self,
            "Application",
            name=application_name(stage),
            description=f"Stratus feature flags ({stage.name})",
        )
        app_id = self.application.ref
        self.environment = appconfig.CfnEnvironment(
            self,
            "Environment",
            application_id=app_id,
            name=environment_name(stage),
            description=f"The {stage.name} stage's functions",
        )
        self.profile = appconfig.CfnConfigurationProfile(
            self,
            "Profile",
            application_id=app_id,
            name=self.names["profile"],
            location_uri=HOSTED_LOCATION,
            type=PROFILE_TYPE,
            description="Powertools Feature Flags document (stratus flags get|set|list)",
            validators=[
                appconfig.CfnConfigurationProfile.ValidatorsProperty(
                    type="JSON_SCHEMA", content=validator
                )
            ],
        )
        steps = strategy_steps(stage.flags.strategy, stage.flags.bake_minutes)
        self.strategy = appconfig.CfnDeploymentStrategy(
            self,
            "Strategy",
            name=f"stratus-{stage.name}-flags-{stage.flags.strategy.replace('_', '-')}",
            description=f"How flag changes of {stage.name} roll out ({stage.flags.strategy})",
            deployment_duration_in_minutes=steps.duration_minutes,
            growth_factor=steps.growth_factor,
            growth_type="LINEAR",
            final_bake_time_in_minutes=steps.bake_minutes,
            replicate_to="NONE",
        )
        self.first_version = appconfig.CfnHostedConfigurationVersion(
            self,
            "DefaultDocument",
            application_id=app_id,
            configuration_profile_id=self.profile.ref,
            content=document_text(default_document()),
            content_type=CONTENT_TYPE,
            description="stratus/data/flags.json (the defaults: Stratus without flags)",
        )
        self.deployment = appconfig.CfnDeployment(
            self,
            "Deployment",
            application_id=app_id,
            environment_id=self.environment.ref,
            configuration_profile_id=self.profile.ref,
            configuration_version=self.first_version.ref,
            deployment_strategy_id=self.strategy.ref,
            description="The default document",
        )
        #: ``arn:...:appconfig:<region>:<account>:application/<id>/environment/<id>/
        #: configuration/<id>``: what StartConfigurationSession / GetLatestConfiguration
        #: are authorized on.
        self.configuration_arn = Stack.of(self).format_arn(
            service="appconfig",
            resource="application",
            resource_name=(
                f"{app_id}/environment/{self.environment.ref}/configuration/{self.profile.ref}"
            ),
        )
        self.granted: list[str] = []

        for output, value, description in (
            ("FlagsApplication", app_id, f"AppConfig application {application_name(stage)}"),
            ("FlagsEnvironment", self.environment.ref, f"Its environment {stage.name}"),
            ("FlagsProfile", self.profile.ref, "Its configuration profile 'flags'"),
            ("FlagsDeploymentStrategyId", self.strategy.ref, "stratus flags set deploys with it"),
        ):
            CfnOutput(scope, output, value=value, description=description)

    def grant_read(self, functions: Iterable[StratusFunction]) -> None:
        """Let each function whose plan reads flags fetch this profile (and only it)."""
        for fn in functions:
            env = fn.plan.static_env
            if not plan_reads_flags(env):
                continue
            missing = [name for name in FLAGS_ENV_NAMES if name not in env]
            if missing or env[FLAGS_APPLICATION_ENV] != self.names["application"]:
                raise ValueError(f"{fn.plan.key}: flags variables {missing} or names differ")
            fn.role.add_to_principal_policy(
                iam.PolicyStatement(actions=list(READ_ACTIONS), resources=[self.configuration_arn])
            )
            self.granted.append(fn.plan.key)

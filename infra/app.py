"""The CDK app: ``python -m infra.app`` (run by ``npx cdk`` through ``cdk.json``).

Reads the stage from context (``-c stage=prod``, default ``dev``), builds its stacks and
runs the cdk-nag AwsSolutions and Serverless packs over them. Synthesis needs neither AWS
credentials nor Docker.

A stage without ``regions`` is one stack, ``Stratus-<stage>``, as it always was. A stage
listing ``regions`` is one stack per region, ``Stratus-<stage>-<region>``, each pinned to
its region and holding its own tables, buckets, queues and functions (docs/regions.md):
no resource with tenant data spans regions, and no stack references another, so
``npx cdk deploy --all -c stage=prod`` deploys them independently.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import App, Aspects, Environment, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from infra.config import StageConfig, stage_from_context
from infra.stack import StratusStack, stack_name
from stratus.agents import AgentSpec


def add_nag_checks(app: App) -> None:
    """Both packs, verbose (findings carry their explanation); each construct suppresses its own."""
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    Aspects.of(app).add(ServerlessChecks(verbose=True))


def regional_stack_name(stage: StageConfig, region: str) -> str:
    """``Stratus-<stage>-<region>``: the stack of one of the stage's regions."""
    return f"{stack_name(stage)}-{region}"


def _regional_dashboard(stack: Stack, stage: StageConfig, region: str) -> None:
    """CloudWatch dashboards are global to the account (not regional): each region's
    dashboard gets the region in its name, or the second region's deploy would clash."""
    for node in stack.node.find_all():
        if isinstance(node, cloudwatch.CfnDashboard):
            node.add_property_override("DashboardName", f"{stack_name(stage)}-{region}")


def build_stacks(
    app: App, *, stage: StageConfig | None = None, agents: Mapping[str, AgentSpec] | None = None
) -> list[StratusStack]:
    """The stage's stacks (one, or one per region) and the nag checks, added to ``app``."""
    stage = stage or stage_from_context(app.node.try_get_context)
    if not stage.regions:
        stacks = [StratusStack(app, stack_name(stage), stage=stage, agents=agents)]
    else:
        stacks = []
        for region in stage.regions:
            regional = stage.in_region(region)
            stack = StratusStack(
                app,
                regional_stack_name(stage, region),
                stage=regional,
                agents=agents,
                # Pinned to its region; the account may stay environment-agnostic.
                env=Environment(account=stage.account, region=region),
            )
            _regional_dashboard(stack, stage, region)
            stacks.append(stack)
    add_nag_checks(app)
    return stacks


def build(
    app: App, *, stage: StageConfig | None = None, agents: Mapping[str, AgentSpec] | None = None
) -> StratusStack:
    """The stage's one stack (a stage without ``regions``); see :func:`build_stacks`."""
    stacks = build_stacks(app, stage=stage, agents=agents)
    if len(stacks) != 1:
        raise ValueError("the stage lists regions: use build_stacks() for its stacks")
    return stacks[0]


def main() -> None:
    app = App()
    build_stacks(app)
    app.synth()


if __name__ == "__main__":
    main()

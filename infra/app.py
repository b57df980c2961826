"""The CDK app: ``python -m infra.app`` (run by ``npx cdk`` through ``cdk.json``).

Reads the stage from context (``-c stage=prod``, default ``dev``), builds
``Stratus-<stage>`` and runs the cdk-nag AwsSolutions and Serverless packs over
it. Synthesis needs neither AWS credentials nor Docker.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import App, Aspects
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from infra.config import StageConfig, stage_from_context
from infra.stack import StratusStack, stack_name
from stratus.agents import AgentSpec


def add_nag_checks(app: App) -> None:
    """Both packs, verbose (findings carry their explanation); each construct suppresses its own."""
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    Aspects.of(app).add(ServerlessChecks(verbose=True))


def build(
    app: App, *, stage: StageConfig | None = None, agents: Mapping[str, AgentSpec] | None = None
) -> StratusStack:
    """Add the stage's stack and the nag checks to ``app``; the stage defaults to context."""
    stage = stage or stage_from_context(app.node.try_get_context)
    stack = StratusStack(app, stack_name(stage), stage=stage, agents=agents)
    add_nag_checks(app)
    return stack


def main() -> None:
    app = App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()

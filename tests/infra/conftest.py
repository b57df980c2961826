"""One synthesis of the real app (dev and prod stacks, cdk-nag on) for the whole session.

Synthesizing is the slow part (a Node process behind jsii), so it happens once:
bundling is skipped (``aws:cdk:bundling-stacks: []``), so no pip, no Docker.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# jsii prints a banner per process on Node 20; set before the first aws_cdk import.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

STAGES = ("dev", "prod")


def synth_context() -> dict[str, Any]:
    """``cdk.json`` context, as the CLI passes it, plus test-only switches."""
    from infra.config import cdk_json_context

    return {
        **cdk_json_context(),
        # No asset is bundled: the asset is the raw source folder.
        "aws:cdk:bundling-stacks": [],
        # Construct paths in template metadata, to match cdk-nag report rows.
        "aws:cdk:enable-path-metadata": True,
        # With this flag, error annotations abort synth() before the tests can list
        # them; the CLI fails on them either way, so turning it off changes no result.
        "@aws-cdk/core:annotationsInValidationReport": False,
    }


@dataclass
class Synthesized:
    """The synthesized app: stacks by stage, their template dicts, the assembly folder."""

    outdir: Path
    stacks: dict[str, Any]
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    template_files: dict[str, Path] = field(default_factory=dict)

    def resources(self, stage: str, type_: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.templates[stage]["Resources"].items()
            if resource["Type"] == type_
        }

    def nag_report(self, stage: str) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for pack in ("AwsSolutions", "Serverless"):
            # cdk-nag names it <pack>-<stage path>-<stack>-NagReport.csv (path empty here).
            (path,) = self.outdir.glob(f"{pack}-*{self.stacks[stage].stack_name}-NagReport.csv")
            with path.open(newline="", encoding="utf-8") as handle:
                rows.extend(csv.DictReader(handle))
        return rows


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    from aws_cdk import App

    from infra.app import add_nag_checks
    from infra.config import load_stage
    from infra.stack import StratusStack, stack_name

    outdir = tmp_path_factory.mktemp("cdk.out")
    app = App(context=synth_context(), outdir=str(outdir))
    stacks = {}
    for name in STAGES:
        stage = load_stage(name)
        stacks[name] = StratusStack(app, stack_name(stage), stage=stage)
    add_nag_checks(app)
    assembly = app.synth()
    result = Synthesized(outdir=outdir, stacks=stacks)
    for name, stack in stacks.items():
        artifact = assembly.get_stack_artifact(stack.artifact_id)
        path = outdir / artifact.template_file
        result.template_files[name] = path
        result.templates[name] = json.loads(path.read_text(encoding="utf-8"))
    yield result


@pytest.fixture(scope="session")
def dev(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.templates["dev"]


@pytest.fixture(scope="session")
def dev_template(synthesized: Synthesized) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(synthesized.templates["dev"])


@pytest.fixture(scope="session")
def prod_template(synthesized: Synthesized) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(synthesized.templates["prod"])


#: The regions of the one regional synthesis (tests/infra/test_regions.py, test_staging.py).
REGIONS = ("eu-west-1", "us-east-1")


@dataclass
class RegionalSynth:
    """The staging stage listing two regions, with one agent: a stack per region."""

    stacks: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    regions: dict[str, str]


@pytest.fixture(scope="session")
def regional_staging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegionalSynth]:
    """ONE synthesis (cdk-nag on) of ``staging`` with ``regions``: the residency and the
    synthetic-traffic tests share it (one small agent keeps it fast)."""
    from aws_cdk import App

    from functions.agents import load_all
    from infra.app import build_stacks
    from infra.config import StageConfig, load_stage

    staging = load_stage("staging")
    stage = StageConfig.model_validate({**staging.model_dump(), "regions": list(REGIONS)})
    outdir = tmp_path_factory.mktemp("cdk.regional")
    app = App(context=synth_context(), outdir=str(outdir))
    stacks = build_stacks(app, stage=stage, agents={"order_status": load_all()["order_status"]})
    assembly = app.synth()
    result = RegionalSynth(stacks={}, templates={}, regions={})
    for stack in stacks:
        artifact = assembly.get_stack_artifact(stack.artifact_id)
        assert artifact.environment.region == stack.region
        path = outdir / artifact.template_file
        result.stacks[stack.stack_name] = stack
        result.templates[stack.stack_name] = json.loads(path.read_text(encoding="utf-8"))
        result.regions[stack.stack_name] = stack.region
    yield result

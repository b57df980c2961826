"""Long-term memory in the template (issue 18): the vector bucket and index of the stage's
config, encrypted, granted least privilege to the functions that use memory and to nobody
else; cdk-nag and cfn-lint clean with memory agents in the stack."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from functions.agents import load_all
from infra.config import MemorySettings, StageConfig, StageConfigError, load_stage, parse_stage
from infra.config import cdk_json_context as context_of
from infra.topology import function_plans
from infra.topology.memory import (
    AGENT_ACTIONS,
    MEMORY_ENV_NAMES,
    PLATFORM_ACTIONS,
    memory_env,
    uses_memory,
)
from stratus.agents import AgentSpec
from tests.infra.conftest import synth_context

pytestmark = pytest.mark.infra

KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _memory_value() -> Any:
    """A ``memory`` policy for a test agent: the spec's own type once it has one."""
    field = AgentSpec.model_fields.get("memory")
    if field is not None:
        for candidate in typing.get_args(field.annotation) or (field.annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                return candidate()
    return True


def memory_agents() -> dict[str, AgentSpec]:
    """``support`` and ``order_status`` as shipped, and ``notes``: ``support`` with memory (fewer
    agents than the app: a smaller stack synthesizes, nags and lints faster)."""
    shipped = load_all()
    agents = {name: shipped[name] for name in ("support", "order_status")}
    agents["notes"] = shipped["support"].model_copy(
        update={"name": "notes", "memory": _memory_value()}
    )
    return agents


def kms_stage() -> StageConfig:
    memory = MemorySettings(dimension=1024, distance="euclidean", kms_key_arn=KMS_KEY)
    return load_stage("prod").model_copy(update={"name": "kms", "memory": memory})


@dataclass
class Synth:
    stacks: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    files: dict[str, Path]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    from aws_cdk import App

    from infra.app import add_nag_checks
    from infra.stack import StratusStack, stack_name

    outdir = tmp_path_factory.mktemp("memory-cdk.out")
    app = App(context=synth_context(), outdir=str(outdir))
    agents = memory_agents()
    stacks = {
        stage.name: StratusStack(app, stack_name(stage), stage=stage, agents=agents)
        for stage in (load_stage("dev"), kms_stage())
    }
    add_nag_checks(app)
    assembly = app.synth()
    templates, files = {}, {}
    for name, stack in stacks.items():
        path = outdir / assembly.get_stack_artifact(stack.artifact_id).template_file
        files[name] = path
        templates[name] = json.loads(path.read_text(encoding="utf-8"))
    yield Synth(stacks, templates, files)


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def only(template: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    (found,) = resources(template, type_).items()
    return found


def test_the_stage_config_builds_the_bucket_and_index(synth: Synth) -> None:
    template = synth.templates["dev"]
    bucket_id, bucket = only(template, "AWS::S3Vectors::VectorBucket")
    assert bucket["Properties"]["VectorBucketName"] == "stratus-dev-memory"
    assert bucket["Properties"]["EncryptionConfiguration"] == {"SseType": "AES256"}
    _, index = only(template, "AWS::S3Vectors::Index")
    properties = {k: v for k, v in index["Properties"].items() if k != "Tags"}
    assert properties == {
        "DataType": "float32",
        "Dimension": 256,
        "DistanceMetric": "cosine",
        "IndexName": "memories",
        "MetadataConfiguration": {"NonFilterableMetadataKeys": ["text"]},
        "VectorBucketName": "stratus-dev-memory",
    }
    assert bucket_id in index["DependsOn"]
    assert bucket["DeletionPolicy"] == index["DeletionPolicy"] == "Delete"  # dev: destroy
    outputs = template["Outputs"]
    assert outputs["MemoryBucketName"]["Value"] == "stratus-dev-memory"


def test_a_kms_stage_encrypts_with_its_key_and_keeps_memories(synth: Synth) -> None:
    template = synth.templates["kms"]
    _, bucket = only(template, "AWS::S3Vectors::VectorBucket")
    assert bucket["Properties"]["EncryptionConfiguration"] == {
        "SseType": "aws:kms",
        "KmsKeyArn": KMS_KEY,
    }
    assert bucket["DeletionPolicy"] == "Retain"
    _, index = only(template, "AWS::S3Vectors::Index")
    assert index["Properties"]["Dimension"] == 1024
    assert index["Properties"]["DistanceMetric"] == "euclidean"
    assert index["DeletionPolicy"] == "Retain"


def _function_grants(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Function logical id -> the s3vectors / kms statements of its role's policies."""
    role_of = {
        fid: fn["Properties"]["Role"]["Fn::GetAtt"][0]
        for fid, fn in resources(template, "AWS::Lambda::Function").items()
    }
    by_role: dict[str, list[dict[str, Any]]] = {}
    for policy in resources(template, "AWS::IAM::Policy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        picked = [
            s
            for s in statements
            if any(a.startswith(("s3vectors:", "kms:Decrypt")) for a in _actions(s))
            and "s3vectors" in json.dumps(s) + json.dumps(statements)
        ]
        for role in policy["Properties"].get("Roles", []):
            by_role.setdefault(role["Ref"], []).extend(picked)
    return {fid: by_role.get(role, []) for fid, role in role_of.items()}


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def _logical_ids(synth: Synth, stage: str) -> dict[str, str]:
    stack = synth.stacks[stage]
    return {
        key: stack.get_logical_id(fn.function.node.default_child)
        for key, fn in stack.functions.by_key.items()
    }


@pytest.mark.parametrize("stage", ["dev", "kms"])
def test_only_memory_functions_are_granted_the_index(synth: Synth, stage: str) -> None:
    template = synth.templates[stage]
    _, index = only(template, "AWS::S3Vectors::Index")
    index_id = next(k for k, v in template["Resources"].items() if v is index)
    grants = _function_grants(template)
    ids = _logical_ids(synth, stage)
    agents = memory_agents()
    expected = {"platform"} | {
        f"{kind}:{name}"
        for name, spec in agents.items()
        if uses_memory(spec)
        for kind in ("agent", "worker")
    }
    assert {"agent:notes", "worker:notes", "platform"} <= expected
    granted = {
        key
        for key, fid in ids.items()
        if any(a.startswith("s3vectors:") for s in grants[fid] for a in _actions(s))
    }
    assert granted == expected
    # None to an agent without memory (support as shipped, unless it opted in).
    for key, fid in ids.items():
        if key not in expected:
            assert not grants[fid], key
    for key in expected:
        vector_statements = [s for s in grants[ids[key]] if _actions(s)[0].startswith("s3vectors:")]
        (statement,) = vector_statements
        wanted = PLATFORM_ACTIONS if key == "platform" else AGENT_ACTIONS
        assert sorted(_actions(statement)) == sorted(wanted)
        assert statement["Resource"] == {"Fn::GetAtt": [index_id, "IndexArn"]}
        assert statement["Effect"] == "Allow"


def test_agents_query_with_filters_so_they_may_read_vectors_but_not_delete(synth: Synth) -> None:
    # QueryVectors with a metadata filter or returnMetadata also needs GetVectors.
    assert {"s3vectors:QueryVectors", "s3vectors:GetVectors"} <= set(AGENT_ACTIONS)
    assert "s3vectors:DeleteVectors" not in AGENT_ACTIONS
    assert {"s3vectors:QueryVectors", "s3vectors:GetVectors"} <= set(PLATFORM_ACTIONS)
    assert "s3vectors:PutVectors" not in PLATFORM_ACTIONS


def test_no_wildcard_vector_actions_or_resources(synth: Synth) -> None:
    for template in synth.templates.values():
        for policy in resources(template, "AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = _actions(statement)
                if not any(a.startswith("s3vectors:") for a in actions):
                    continue
                assert all("*" not in a for a in actions), actions
                assert statement["Resource"] != "*"


def test_the_kms_key_is_granted_to_memory_functions_only(synth: Synth) -> None:
    template = synth.templates["kms"]
    grants = _function_grants(template)
    ids = _logical_ids(synth, "kms")
    with_key = {
        key for key, fid in ids.items() for s in grants[fid] if s.get("Resource") == KMS_KEY
    }
    assert with_key == {"platform", "agent:notes", "worker:notes"} | {
        f"{kind}:{n}"
        for n, s in memory_agents().items()
        if uses_memory(s)
        for kind in ("agent", "worker")
    }


def test_memory_env_only_on_memory_functions(synth: Synth) -> None:
    stage = load_stage("dev")
    agents = memory_agents()
    plans = {plan.key: plan for plan in function_plans(stage, agents)}
    for key, plan in plans.items():
        names = set(plan.env_names)
        if key in ("platform", "agent:notes", "worker:notes"):
            assert set(MEMORY_ENV_NAMES) <= names, key
            assert {k: plan.static_env[k] for k in MEMORY_ENV_NAMES} == memory_env(stage)
        elif not (key.startswith(("agent:", "worker:")) and uses_memory(agents[key.split(":")[1]])):
            assert not set(MEMORY_ENV_NAMES) & names, key
    env = memory_env(stage)
    assert env["STRATUS_MEMORY_TTL_S"] == str(90 * 86_400)
    assert env["STRATUS_MEMORY_INDEX"] == "memories"
    # Embedding a search's q is a model call: the platform gets the secret and the gateway.
    platform = plans["platform"]
    assert platform.model_secret and platform.budget_alerts
    assert {"budgets", "ledger", "usage", "limits"} <= set(platform.tables)
    assert platform.tables["budgets"] == "read_write"
    # Without memory agents the platform gets none of it.
    plain = {name: spec for name, spec in agents.items() if not uses_memory(spec)}
    bare = {p.key: p for p in function_plans(stage, plain)}["platform"]
    assert not bare.model_secret
    assert not set(MEMORY_ENV_NAMES) & set(bare.env_names)


def test_the_prod_stage_keeps_memories_a_year() -> None:
    assert load_stage("prod").memory.ttl_days == 365
    assert load_stage("dev").memory.ttl_days == 90


@pytest.mark.parametrize(
    ("memory", "field"),
    [
        ({"dimension": 0}, "memory.dimension"),
        ({"dimension": 4097}, "memory.dimension"),
        ({"distance": "dot"}, "memory.distance"),
        ({"ttl_days": 0}, "memory.ttl_days"),
        ({"kms_key_arn": "alias/mine"}, "memory.kms_key_arn"),
        ({"dimensions": 256}, "memory.dimensions"),
    ],
)
def test_a_bad_memory_config_fails_with_the_field(memory: dict[str, Any], field: str) -> None:
    stages = context_of()["stratus:stages"]
    broken = {**stages, "dev": {**stages["dev"], "memory": {**stages["dev"]["memory"], **memory}}}
    with pytest.raises(StageConfigError, match=field.replace(".", r"\.")):
        parse_stage("dev", broken)


@pytest.mark.parametrize("stage", ["dev", "kms"])
def test_cdk_nag_clean_with_memory(synth: Synth, stage: str) -> None:
    from aws_cdk.assertions import Annotations, Match

    annotations = Annotations.from_stack(synth.stacks[stage])
    for pack in ("AwsSolutions", "Serverless"):
        pattern = Match.string_like_regexp(f"{pack}-.*")
        errors = annotations.find_error("*", pattern)
        warnings = annotations.find_warning("*", pattern)
        assert not errors, [(e.id, e.entry.data) for e in errors]
        assert not warnings, [(w.id, w.entry.data) for w in warnings]


@pytest.mark.parametrize("stage", ["dev", "kms"])
def test_cfn_lint_clean_with_memory(synth: Synth, stage: str) -> None:
    from cfnlint.api import ManualArgs, lint_file

    from tests.infra.test_cfn_lint import ALLOWED_WARNINGS

    matches = lint_file(synth.files[stage], config=ManualArgs())
    vector_types = {"AWS::S3Vectors::VectorBucket", "AWS::S3Vectors::Index"}
    assert vector_types <= {r["Type"] for r in synth.templates[stage]["Resources"].values()}
    problems = [m for m in matches if m.rule.id not in ALLOWED_WARNINGS]
    assert not problems, "\n".join(str(m) for m in problems)

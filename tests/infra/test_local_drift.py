"""The local cloud and the synthesized stack cannot drift apart.

The local cloud builds its resources from the same definitions as the CDK
stack; these tests compare what each one really produces: the DynamoDB tables
moto holds against the template's, and the environment, handler, memory and
timeout of every local function against the template's Lambda functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from infra.local.cloud import LocalCloud

pytestmark = pytest.mark.xdist_group("local-cloud")

#: Variables only the local cloud sets: where the offline model server listens.
LOCAL_ONLY_ENV = {"OPENAI_BASE_URL"}


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCloud]:
    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with LocalCloud(
        api_port=0, aws_port=0, state_file=None, log_sink=lambda line: None, environ=environ
    ) as cloud:
        yield cloud


def _table_shape(table: dict[str, Any], ttl: str | None) -> tuple[Any, ...]:
    indexes = sorted(
        (index["IndexName"], tuple((k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]))
        for index in table.get("GlobalSecondaryIndexes") or []
    )
    return (
        tuple((k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]),
        tuple(
            sorted((a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"])
        ),
        tuple(indexes),
        ttl,
    )


def test_local_tables_match_the_template(dev: dict[str, Any], local: LocalCloud) -> None:
    deployed = sorted(
        _table_shape(
            r["Properties"],
            (r["Properties"].get("TimeToLiveSpecification") or {}).get("AttributeName"),
        )
        for r in dev["Resources"].values()
        if r["Type"] == "AWS::DynamoDB::Table"
    )
    facts = local.facts
    assert facts is not None
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=facts.aws_endpoint_url,
        region_name=facts.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    shapes = []
    for name in facts.tables.values():
        table = dynamodb.describe_table(TableName=name)["Table"]
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        shapes.append(_table_shape(table, ttl.get("AttributeName")))
    assert sorted(shapes) == deployed
    assert len(deployed) == 3


def _function_identity(handler: str, env: dict[str, Any]) -> tuple[str, str]:
    return handler, str(env.get("STRATUS_AGENT", "-"))


def test_local_functions_get_the_stacks_environment(dev: dict[str, Any], local: LocalCloud) -> None:
    deployed = {}
    for resource in dev["Resources"].values():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        props = resource["Properties"]
        if not str(props.get("Handler", "")).startswith("functions."):
            continue  # CDK's own helper functions (none today)
        env = props.get("Environment", {}).get("Variables", {})
        # Literal values must match too; resource names (CloudFormation refs) differ.
        literal = {k: v for k, v in env.items() if isinstance(v, str)}
        deployed[_function_identity(props["Handler"], env)] = (
            sorted(env),
            literal,
            props["MemorySize"],
            props["Timeout"],
        )
    assert local.runtime is not None
    running = {}
    for name in local.runtime.names:
        config = local.runtime.function(name)
        env = dict(config.environment)
        key = _function_identity(config.handler, env)
        literal_names = set(deployed.get(key, ([], {}, 0, 0))[1])
        running[key] = (
            sorted(set(env) - LOCAL_ONLY_ENV),
            {k: v for k, v in env.items() if k in literal_names},
            config.memory_mb,
            int(config.timeout_s),
        )
    assert running == deployed
    assert len(deployed) == 5  # platform, authorizer, three agents

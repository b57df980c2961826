"""The local cloud and the synthesized stack cannot drift apart.

The local cloud builds its resources from the same definitions as the CDK
stack; these tests compare what each one really produces: the DynamoDB tables
moto holds against the template's, and the environment, handler, memory and
timeout of every local function against the template's Lambda functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from infra.local.cloud import LocalCloud

pytestmark = pytest.mark.xdist_group("local-cloud")

#: Variables only the local cloud sets: where the offline model server listens.
LOCAL_ONLY_ENV = {"OPENAI_BASE_URL"}
#: Values the local cloud sets on purpose apart from the stack's: flags apply in seconds.
LOCAL_VALUES = {"STRATUS_FLAGS_MAX_AGE_S"}


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
        # ``or ""``: tables with the same keys, with and without TTL, must still sort.
        ttl or "",
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
    from infra.definitions import TABLES

    assert len(deployed) == len(TABLES)


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

    def deployed_value(key: Any, name: str) -> str:
        return str(deployed[key][1][name])

    running = {}
    for name in local.runtime.names:
        config = local.runtime.function(name)
        env = dict(config.environment)
        key = _function_identity(config.handler, env)
        literal_names = set(deployed.get(key, ([], {}, 0, 0))[1])
        running[key] = (
            sorted(set(env) - LOCAL_ONLY_ENV),
            {
                k: deployed_value(key, k) if k in LOCAL_VALUES else v
                for k, v in env.items()
                if k in literal_names
            },
            config.memory_mb,
            int(config.timeout_s),
        )
    assert running == deployed
    from functions.agents import load_all

    assert len(deployed) >= 2 + len(load_all())  # platform, authorizer, one per agent, ...


def _client(local: LocalCloud, service: str) -> Any:
    facts = local.facts
    assert facts is not None
    return boto3.client(
        service,
        endpoint_url=facts.aws_endpoint_url,
        region_name=facts.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def _mapped_function(resources: dict[str, Any], mapping: dict[str, Any]) -> str:
    """The function a mapping feeds: named directly, or through its ``live`` alias (whose
    qualified name CDK renders as ``<alias's function>:live``)."""
    name = mapping["Properties"]["FunctionName"]
    if "Ref" in name and resources[name["Ref"]]["Type"] == "AWS::Lambda::Function":
        return str(name["Ref"])
    text = json.dumps(name)
    (alias,) = [
        logical
        for logical, r in resources.items()
        if r["Type"] == "AWS::Lambda::Alias" and f'"{logical}"' in text
    ]
    return str(resources[alias]["Properties"]["FunctionName"]["Ref"])


def test_local_queues_and_mappings_match_the_template(
    dev: dict[str, Any], local: LocalCloud
) -> None:
    from infra.topology import queue_plans

    resources = dev["Resources"]
    deployed = sorted(
        (
            int(r["Properties"]["VisibilityTimeout"]),
            int(r["Properties"]["RedrivePolicy"]["maxReceiveCount"]),
            int(
                resources[r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]][
                    "Properties"
                ]["MessageRetentionPeriod"]
            ),
        )
        for r in resources.values()
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"]
    )
    facts = local.facts
    assert facts is not None
    sqs = _client(local, "sqs")
    running = []
    for plan in queue_plans(local.stage, local.specs):
        attrs = sqs.get_queue_attributes(
            QueueUrl=facts.queue_urls[plan.name], AttributeNames=["All"]
        )["Attributes"]
        dlq = sqs.get_queue_attributes(
            QueueUrl=facts.queue_urls[plan.dlq_name], AttributeNames=["All"]
        )["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
        running.append(
            (
                int(attrs["VisibilityTimeout"]),
                int(redrive["maxReceiveCount"]),
                int(dlq["MessageRetentionPeriod"]),
            )
        )
    assert sorted(running) == deployed
    assert len(deployed) == len(local.specs) + 2  # ingest, callbacks and one per agent
    # Visibility timeout at least 6x the consumer's timeout, in both.
    functions = {
        logical: r for logical, r in resources.items() if r["Type"] == "AWS::Lambda::Function"
    }
    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == len(deployed)
    deployed_mappings = sorted(
        (
            functions[_mapped_function(resources, m)]["Properties"]["Handler"],
            m["Properties"]["BatchSize"],
            tuple(m["Properties"].get("FunctionResponseTypes", [])),
        )
        for m in mappings
    )
    assert local.runtime is not None
    local_mappings = sorted(
        (
            local.runtime.function(poller.mapping.function_name).handler,
            poller.mapping.batch_size,
            ("ReportBatchItemFailures",) if poller.mapping.report_batch_item_failures else (),
        )
        for poller in local.pollers.values()
    )
    assert local_mappings == deployed_mappings
    for poller in local.pollers.values():
        timeout = local.runtime.function(poller.mapping.function_name).timeout_s
        attrs = sqs.get_queue_attributes(
            QueueUrl=poller.mapping.queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        assert int(attrs["VisibilityTimeout"]) >= 6 * timeout


def test_local_state_machines_run_the_templates_definition(
    dev: dict[str, Any], local: LocalCloud
) -> None:
    resources = dev["Resources"]
    machines = {
        r["Properties"]["StateMachineName"]: r
        for r in resources.values()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
    }
    assert local.facts is not None and local.runtime is not None
    assert len(machines) == len(local.facts.state_machine_arns) >= 1
    sfn = _client(local, "stepfunctions")
    for agent, arn in local.facts.state_machine_arns.items():
        described = sfn.describe_state_machine(stateMachineArn=arn)
        props = machines[described["name"]]["Properties"]
        assert props["StateMachineType"] == "STANDARD" and described["type"] == "STANDARD"
        assert props["TracingConfiguration"] == {"Enabled": True}
        assert props["LoggingConfiguration"]["Level"] == "ALL"
        template = props["DefinitionString"]
        for var, value in props["DefinitionSubstitutions"].items():
            # The template substitutes a function's ARN, or its ``live`` alias's (an agent's
            # worker); locally, the same function's ARN (the local cloud has no aliases:
            # its Invoke front routes a function's versions itself).
            logical = value["Fn::GetAtt"][0] if "Fn::GetAtt" in value else value["Ref"]
            if resources[logical]["Type"] == "AWS::Lambda::Alias":
                logical = resources[logical]["Properties"]["FunctionName"]["Ref"]
            function = resources[logical]["Properties"]
            env = function["Environment"]["Variables"]
            (local_name,) = [
                name
                for name in local.runtime.names
                if local.runtime.function(name).handler == function["Handler"]
                and local.runtime.function(name).environment.get("STRATUS_AGENT")
                == env.get("STRATUS_AGENT")
            ]
            template = template.replace(
                "${" + var + "}", f"arn:aws:lambda:us-east-1:000000000000:function:{local_name}"
            )
        assert json.loads(described["definition"]) == json.loads(template)
        assert local.workflow_definitions[agent] == described["definition"]


def test_local_memory_index_matches_the_template(dev: dict[str, Any], local: LocalCloud) -> None:
    """Long-term memory (issue 18): the same vector bucket and index, with the same shape."""
    (bucket,) = (
        r for r in dev["Resources"].values() if r["Type"] == "AWS::S3Vectors::VectorBucket"
    )
    (index,) = (r for r in dev["Resources"].values() if r["Type"] == "AWS::S3Vectors::Index")
    name = bucket["Properties"]["VectorBucketName"]
    s3v = _client(local, "s3vectors")
    local_bucket = s3v.get_vector_bucket(vectorBucketName=name)["vectorBucket"]
    assert (
        local_bucket["encryptionConfiguration"]["sseType"]
        == (bucket["Properties"]["EncryptionConfiguration"]["SseType"])
    )
    described = s3v.get_index(vectorBucketName=name, indexName=index["Properties"]["IndexName"])
    got = described["index"]
    assert (got["dataType"], got["dimension"], got["distanceMetric"]) == (
        index["Properties"]["DataType"],
        index["Properties"]["Dimension"],
        index["Properties"]["DistanceMetric"],
    )
    assert (
        got["metadataConfiguration"]["nonFilterableMetadataKeys"]
        == (index["Properties"]["MetadataConfiguration"]["NonFilterableMetadataKeys"])
    )
    assert local.memory_index_arn == got["indexArn"]

"""The local cloud's AWS resources, created in moto from the stack's own plans.

Tables from ``infra.definitions``, queues and workflows from ``infra.topology``
(the same ASL files and variables as the CDK stack), plus the extra queues and
state machines tests ask for, the demo tenant's orders and its callback signing key.

The local cloud's producers are its access keys: moto's SQS reports the sending
request's access key id as ``SenderId`` (:mod:`infra.local.moto_sender`), and the
stage's ``{"access_key": ...}`` producer entries bind them to tenants (the demo's
``demo``, ``x`` and ``local`` keys, in ``cdk.json``'s dev stage).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import boto3
from botocore.config import Config

from infra.config import StageConfig
from infra.definitions import TABLES, create_table_kwargs, ttl_kwargs
from infra.local.facts import ACCOUNT_ID, LOCAL_CREDENTIALS, REGION, QueueSpec, StateMachineSpec
from infra.local.lambda_types import FunctionConfig
from infra.topology import FunctionPlan, QueuePlan, WorkflowPlan
from infra.topology.flags import (
    CONTENT_TYPE,
    HOSTED_LOCATION,
    PROFILE_TYPE,
    default_document,
    document_text,
    flags_names,
    schema_text,
)
from infra.topology.memory import (
    DATA_TYPE,
    MEMORY_INDEX,
    NON_FILTERABLE_KEYS,
    memory_bucket_name,
    memory_encryption,
)
from stratus.ddb import Table
from stratus.signing_keys import DynamoSigningKeyStore, SigningKey, SigningKeys

STATES_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/stratus-local-states"


class LocalClients:
    """boto3 clients of this process pointed at the local AWS endpoint."""

    def __init__(self, endpoint: str) -> None:
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=REGION,
        )
        config = Config(retries={"mode": "standard", "max_attempts": 3})
        self.dynamodb = session.client("dynamodb", endpoint_url=endpoint, config=config)
        self.sqs = session.client("sqs", endpoint_url=endpoint, config=config)
        self.secretsmanager = session.client("secretsmanager", endpoint_url=endpoint, config=config)
        self.stepfunctions = session.client("stepfunctions", endpoint_url=endpoint, config=config)
        self.sns = session.client("sns", endpoint_url=endpoint, config=config)
        self.s3vectors = session.client("s3vectors", endpoint_url=endpoint, config=config)
        self.appconfig = session.client("appconfig", endpoint_url=endpoint, config=config)

    def queue_arn(self, url: str) -> str:
        """The ARN of the queue at ``url``."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])


def function_arn(name: str) -> str:
    """The local ARN of a function, as the AWS front and moto's interpreter know it."""
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


def function_config(plan: FunctionPlan, name: str, env: dict[str, str]) -> FunctionConfig:
    """The local runtime's view of a function plan (reserved concurrency caps workers)."""
    return FunctionConfig(
        name=name,
        handler=plan.handler,
        environment=env,
        timeout_s=float(plan.timeout_s),
        memory_mb=plan.memory_mb,
        max_concurrency=plan.reserved_concurrency,
    )


def create_tables(clients: LocalClients, stage: StageConfig) -> dict[str, str]:
    """Every table of ``infra.definitions``; logical name -> physical name."""
    names = {}
    for table in TABLES:
        name = f"stratus-{stage.name}-{table.name}"
        clients.dynamodb.create_table(**create_table_kwargs(table, name))
        ttl = ttl_kwargs(table, name)
        if ttl:
            clients.dynamodb.update_time_to_live(**ttl)
        names[table.name] = name
    return names


def create_memory(clients: LocalClients, stage: StageConfig) -> str:
    """The stage's memory vector bucket and index, as the stack has them; the index ARN."""
    bucket = memory_bucket_name(stage)
    clients.s3vectors.create_vector_bucket(
        vectorBucketName=bucket, encryptionConfiguration=memory_encryption(stage)
    )
    clients.s3vectors.create_index(
        vectorBucketName=bucket,
        indexName=MEMORY_INDEX,
        dataType=DATA_TYPE,
        dimension=stage.memory.dimension,
        distanceMetric=stage.memory.distance,
        metadataConfiguration={"nonFilterableMetadataKeys": list(NON_FILTERABLE_KEYS)},
    )
    index = clients.s3vectors.get_index(vectorBucketName=bucket, indexName=MEMORY_INDEX)
    return str(index["index"]["indexArn"])


def create_flags(clients: LocalClients, stage: StageConfig) -> dict[str, str]:
    """The stage's flags application and profile with the default document as its first
    hosted version (moto has no environments or deployments: the latest hosted version
    is what :mod:`infra.local.moto_appconfig` serves). The names and moto's ids."""
    names = flags_names(stage)
    app_id = clients.appconfig.create_application(
        Name=names["application"], Description=f"Stratus feature flags ({stage.name})"
    )["Id"]
    profile_id = clients.appconfig.create_configuration_profile(
        ApplicationId=app_id,
        Name=names["profile"],
        LocationUri=HOSTED_LOCATION,
        Type=PROFILE_TYPE,
        Validators=[{"Type": "JSON_SCHEMA", "Content": schema_text()}],
    )["Id"]
    clients.appconfig.create_hosted_configuration_version(
        ApplicationId=app_id,
        ConfigurationProfileId=profile_id,
        Content=document_text(default_document()).encode(),
        ContentType=CONTENT_TYPE,
        Description="stratus/data/flags.json",
    )
    return {**names, "application_id": str(app_id), "profile_id": str(profile_id)}


def create_app_queues(
    clients: LocalClients, stage: StageConfig, plans: Iterable[QueuePlan]
) -> dict[str, str]:
    """The stack's queues and DLQs (``infra.topology.queue_plans``), by logical name."""
    urls: dict[str, str] = {}
    for plan in plans:
        physical = f"stratus-{stage.name}-{plan.name}"
        dlq_url = clients.sqs.create_queue(
            QueueName=f"{physical}-dlq",
            Attributes={"MessageRetentionPeriod": str(plan.dlq_retention_s)},
        )["QueueUrl"]
        urls[plan.name] = clients.sqs.create_queue(
            QueueName=physical,
            Attributes={
                "VisibilityTimeout": str(plan.visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {
                        "deadLetterTargetArn": clients.queue_arn(dlq_url),
                        "maxReceiveCount": plan.max_receive_count,
                    }
                ),
            },
        )["QueueUrl"]
        urls[plan.dlq_name] = dlq_url
    return urls


def create_extra_queues(clients: LocalClients, queues: Iterable[QueueSpec]) -> dict[str, str]:
    """Queues beyond the app's own, each with its DLQ; name (and ``<name>-dlq``) -> URL."""
    urls: dict[str, str] = {}
    for queue in queues:
        dlq_url = clients.sqs.create_queue(QueueName=f"{queue.name}-dlq")["QueueUrl"]
        urls[queue.name] = clients.sqs.create_queue(
            QueueName=queue.name,
            Attributes={
                "VisibilityTimeout": str(queue.visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {
                        "deadLetterTargetArn": clients.queue_arn(dlq_url),
                        "maxReceiveCount": str(queue.max_receive_count),
                    }
                ),
            },
        )["QueueUrl"]
        urls[f"{queue.name}-dlq"] = dlq_url
    return urls


def create_workflows(
    clients: LocalClients,
    stage: StageConfig,
    plans: Iterable[WorkflowPlan],
    names: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str]]:
    """The agents' state machines from the stack's ASL files: (ARNs, rendered definitions)."""
    arns: dict[str, str] = {}
    definitions: dict[str, str] = {}
    function_arns = {key: function_arn(name) for key, name in names.items()}
    for plan in plans:
        definition = plan.render(function_arns)
        arns[plan.agent] = clients.stepfunctions.create_state_machine(
            name=plan.state_machine_name(stage),
            definition=definition,
            type="STANDARD",
            roleArn=STATES_ROLE_ARN,
        )["stateMachineArn"]
        definitions[plan.agent] = definition
    return arns, definitions


def create_state_machines(
    clients: LocalClients, machines: Iterable[StateMachineSpec], names: Mapping[str, str]
) -> dict[str, str]:
    """Extra state machines; ``${Function:<key>}`` in a definition becomes that ARN."""
    arns = {}
    for machine in machines:
        definition = machine.definition
        for key, name in names.items():
            definition = definition.replace("${Function:" + key + "}", function_arn(name))
        arns[machine.name] = clients.stepfunctions.create_state_machine(
            name=machine.name,
            definition=definition,
            type=machine.type,
            roleArn=STATES_ROLE_ARN,
        )["stateMachineArn"]
    return arns


def seed_orders(clients: LocalClients, tables: Mapping[str, str], tenant_id: str) -> None:
    """Two orders of the demo tenant, for the ``order_status`` agent's tool; each belongs
    to an end customer (a key bound to ``cust-1`` finds only A-1001)."""
    orders: list[tuple[str, str, str, str, list[Any], str]] = [
        ("A-1001", "in_transit", "DHL", "2026-11-24", ["running shoes"], "cust-1"),
        ("A-1002", "delivered", "UPS", "2026-11-18", ["rain jacket", "socks"], "cust-2"),
    ]
    table = Table(tables["orders"], clients.dynamodb)
    for order_id, status, carrier, eta, items, customer_id in orders:
        table.put(
            {
                "tenant_id": tenant_id,
                "order_id": order_id,
                "status": status,
                "carrier": carrier,
                "eta": eta,
                "items": items,
                "customer_id": customer_id,
            }
        )


def create_signing_key(
    clients: LocalClients, tables: Mapping[str, str], tenant_id: str
) -> SigningKey:
    """A new tenant's first callback signing key (what ``stratus tenant create`` does too)."""
    store = DynamoSigningKeyStore(Table(tables["callback_keys"], clients.dynamodb))
    return SigningKeys(store).create_for(tenant_id)

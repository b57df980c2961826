"""The DynamoDB tables of the stack, as plain data.

The CDK constructs (``infra.constructs.tables``) and the local cloud (moto,
through boto3) both build their tables from these definitions, so the key
schema a handler sees locally is the one it gets in AWS. Nothing here imports
the CDK: reading a definition must stay cheap and work without Node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

AttributeType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class Key:
    """One key attribute (partition or sort key) and its DynamoDB type."""

    name: str
    type: AttributeType = "S"


@dataclass(frozen=True)
class GlobalIndex:
    """A global secondary index; always projects all attributes (on-demand billing)."""

    name: str
    partition_key: Key
    sort_key: Key | None = None


@dataclass(frozen=True)
class TableDefinition:
    """One table: its logical name, keys, TTL attribute and indexes.

    ``env_var`` is the variable through which functions learn the physical name
    (CDK generates it in AWS; the local cloud picks its own).
    """

    name: str
    env_var: str
    partition_key: Key
    sort_key: Key | None = None
    ttl_attribute: str | None = None
    indexes: tuple[GlobalIndex, ...] = ()
    description: str = ""

    @property
    def key_attributes(self) -> tuple[Key, ...]:
        """Every attribute that must be declared in ``AttributeDefinitions``, once."""
        keys: list[Key] = [self.partition_key]
        if self.sort_key is not None:
            keys.append(self.sort_key)
        for index in self.indexes:
            keys.append(index.partition_key)
            if index.sort_key is not None:
                keys.append(index.sort_key)
        unique: dict[str, Key] = {}
        for key in keys:
            seen = unique.setdefault(key.name, key)
            if seen.type != key.type:
                raise ValueError(f"{self.name}: attribute {key.name!r} has two types")
        return tuple(unique.values())


TENANTS = TableDefinition(
    name="tenants",
    env_var="STRATUS_TENANTS_TABLE",
    partition_key=Key("pk"),
    # Sparse: only key items carry tenant_id, so the index lists exactly a tenant's keys.
    indexes=(GlobalIndex("tenant_keys", Key("tenant_id"), Key("created_at")),),
    description="Tenants (TENANT#<id>) and their API keys (KEY#<sha256 of the key>). "
    "Index tenant_keys: a tenant's keys by tenant_id and created_at.",
)

IDEMPOTENCY = TableDefinition(
    name="idempotency",
    env_var="STRATUS_IDEMPOTENCY_TABLE",
    partition_key=Key("id"),
    # The Powertools idempotency default schema: key attribute "id", TTL "expiration".
    ttl_attribute="expiration",
    description="Powertools idempotency records; expire through TTL.",
)

ORDERS = TableDefinition(
    name="orders",
    env_var="STRATUS_ORDERS_TABLE",
    partition_key=Key("tenant_id"),
    sort_key=Key("order_id"),
    description="Sample orders read by the order_status agent, partitioned by tenant.",
)

JOBS = TableDefinition(
    name="jobs",
    env_var="STRATUS_JOBS_TABLE",
    partition_key=Key("job_id"),
    sort_key=Key("sk"),
    ttl_attribute="expires_at",
    # Sparse: lease_shard exists only while a job is leased (or held after a re-queue),
    # so the lease sweep queries expired leases without scanning the table.
    indexes=(GlobalIndex("leases", Key("lease_shard"), Key("lease_until", "N")),),
    description=(
        "Asynchronous jobs: the job record (sk JOB) and one item per step (sk STEP#<name>); "
        "expire through TTL. Index leases: running jobs by lease_shard and lease_until."
    ),
)

SESSIONS = TableDefinition(
    name="sessions",
    env_var="STRATUS_SESSIONS_TABLE",
    # sid = <tenant>#<agent>#<session id>: another tenant's lookup never finds the item.
    partition_key=Key("sid"),
    sort_key=Key("sk"),
    ttl_attribute="expires_at",
    description=(
        "Sessions: the head (sk H), one item per message (M#<index>), the ticket counter (N), "
        "queued turns (Q#<ticket>) and the rolling summary (S); expire through TTL."
    ),
)

BUDGETS = TableDefinition(
    name="budgets",
    env_var="STRATUS_BUDGETS_TABLE",
    partition_key=Key("pk"),
    ttl_attribute="expires_at",
    description=(
        "Budget ledger: one counter per scope and period (TENANT#<t>#DAY#<date>, "
        "TENANT#<t>#MONTH#<month>, AGENT#<a>#DAY#<date>, GLOBAL#DAY#<date>, TASK#...) "
        "and tenant limits (LIMITS#<t>)."
    ),
)

LEDGER = TableDefinition(
    name="ledger",
    env_var="STRATUS_LEDGER_TABLE",
    partition_key=Key("pk"),
    ttl_attribute="expires_at",
    description=(
        "Call ledger (CALL#<scope>#<step>#<request hash>: completions replayed to retries) "
        "and the opt-in response cache (CACHE#<tenant>#<agent>#<hash>); expire through TTL."
    ),
)

USAGE = TableDefinition(
    name="usage",
    env_var="STRATUS_USAGE_TABLE",
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    ttl_attribute="expires_at",
    description=(
        "Usage and cost rollups: per tenant and day/month by agent, per agent and day by "
        "model, per request/session/job."
    ),
)

LIMITS = TableDefinition(
    name="limits",
    env_var="STRATUS_LIMITS_TABLE",
    partition_key=Key("pk"),
    ttl_attribute="expires_at",
    description=(
        "Fleet-shared gateway state: per-key rate-limit buckets (BUCKET#<key>#<minute>), "
        "key cool-downs (KEY#<key>) and circuit breakers (BREAKER#<endpoint>#<model>)."
    ),
)

REVIEWS = TableDefinition(
    name="reviews",
    env_var="STRATUS_REVIEWS_TABLE",
    # pk = T#<tenant>: a tenant only ever reads its own reviews and scores.
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    ttl_attribute="expires_at",
    description=(
        "Human review sampling: reviews queued for grading (sk R#<time-sortable id>, "
        "pending|reviewed; expire through TTL) and the human score per agent and release "
        "(sk S#<agent>#<release>: score_sum and reviewed)."
    ),
)

AUDIT = TableDefinition(
    name="audit",
    env_var="STRATUS_AUDIT_TABLE",
    # pk = T#<tenant>: a tenant only ever reads its own trail; sk = the time-sortable
    # event id (stratus.audit.new_event_id), so a tenant's events query in time order.
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    ttl_attribute="expires_at",
    description=(
        "The audit trail (issue 14): one item per security-relevant event of a tenant "
        "(sk = time-sortable event id); expires after the stage's audit_retention_days."
    ),
)

CALLBACK_KEYS = TableDefinition(
    name="callback_keys",
    env_var="STRATUS_CALLBACK_KEYS_TABLE",
    # pk = T#<tenant>, sk = K#<kid>: the callbacks function reads one tenant's keys in one
    # Query; a rotated-out key expires (TTL) a day after its grace period ends.
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    ttl_attribute="expires_at",
    description=(
        "Per-tenant HMAC keys that sign job callbacks (issue 14): both keys of a "
        "rollover are valid until the old one's valid_until."
    ),
)

STREAMS = TableDefinition(
    name="streams",
    env_var="STRATUS_STREAMS_TABLE",
    partition_key=Key("pk"),
    ttl_attribute="expires_at",
    description=(
        "WebSocket streaming (issue 17): connections (CONN#<connection id>, TTL 2 h), "
        "single-use connect tickets (TICKET#<sha256>, TTL 60 s) and streamed requests by "
        "client id (FRAME#<tenant>#<agent>#<id>: running|done and the final frame, TTL 24 h)."
    ),
)

#: Every table of the stack, in creation order.
TABLES: tuple[TableDefinition, ...] = (
    TENANTS,
    IDEMPOTENCY,
    ORDERS,
    JOBS,
    SESSIONS,
    BUDGETS,
    LEDGER,
    USAGE,
    LIMITS,
    REVIEWS,
    AUDIT,
    CALLBACK_KEYS,
    STREAMS,
)


def table_definition(name: str) -> TableDefinition:
    """The definition with this logical name (``tenants``, ``idempotency``, ``orders``)."""
    for table in TABLES:
        if table.name == name:
            return table
    raise KeyError(f"no table named {name!r}; known: {', '.join(t.name for t in TABLES)}")


def _key_schema(partition: Key, sort: Key | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition.name, "KeyType": "HASH"}]
    if sort is not None:
        schema.append({"AttributeName": sort.name, "KeyType": "RANGE"})
    return schema


def create_table_kwargs(table: TableDefinition, table_name: str) -> dict[str, Any]:
    """``dynamodb.create_table(**kwargs)`` arguments for this table (on-demand billing).

    TTL is not part of ``CreateTable``; apply :func:`ttl_kwargs` afterwards.
    """
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": key.name, "AttributeType": key.type} for key in table.key_attributes
        ],
        "KeySchema": _key_schema(table.partition_key, table.sort_key),
    }
    if table.indexes:
        kwargs["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": _key_schema(index.partition_key, index.sort_key),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in table.indexes
        ]
    return kwargs


def ttl_kwargs(table: TableDefinition, table_name: str) -> dict[str, Any] | None:
    """``dynamodb.update_time_to_live(**kwargs)`` arguments, or None if the table has no TTL."""
    if table.ttl_attribute is None:
        return None
    return {
        "TableName": table_name,
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": table.ttl_attribute},
    }

"""The stack's DynamoDB tables, built from ``infra.definitions``.

Safe defaults for every table: on-demand billing (no capacity to tune or to
throttle on), point-in-time recovery, AWS-managed KMS encryption, TTL where the
definition has one, and in retaining stages deletion protection plus RETAIN.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from infra.config import StageConfig
from infra.definitions import TABLES, Key, TableDefinition

_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}


def _attribute(key: Key) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=_TYPES[key.type])


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class StratusTables(Construct):
    """One ``dynamodb.Table`` per definition, reachable by logical name."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        definitions: Sequence[TableDefinition] = TABLES,
    ) -> None:
        super().__init__(scope, construct_id)
        self.definitions = tuple(definitions)
        self.tables: dict[str, dynamodb.Table] = {}
        for definition in self.definitions:
            self.tables[definition.name] = self._table(definition, stage)

    def _table(self, definition: TableDefinition, stage: StageConfig) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            _pascal(definition.name),
            partition_key=_attribute(definition.partition_key),
            sort_key=_attribute(definition.sort_key) if definition.sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=definition.ttl_attribute,
            deletion_protection=stage.deletion_protection,
            removal_policy=RemovalPolicy.RETAIN if stage.retain else RemovalPolicy.DESTROY,
        )
        for index in definition.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=_attribute(index.partition_key),
                sort_key=_attribute(index.sort_key) if index.sort_key else None,
                projection_type=dynamodb.ProjectionType.ALL,
            )
        return table

    def table(self, name: str) -> dynamodb.Table:
        """The table with this logical name (``tenants``, ``idempotency``, ``orders``)."""
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"no table named {name!r}; known: {', '.join(self.tables)}") from None

    @property
    def table_names(self) -> dict[str, str]:
        """Logical name -> physical name (a token until deployment)."""
        return {name: table.table_name for name, table in self.tables.items()}

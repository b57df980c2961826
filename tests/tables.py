"""Creates the stack's tables in moto from the same definitions the CDK uses."""

from __future__ import annotations

from typing import Any

from infra.definitions import TABLES, create_table_kwargs, ttl_kwargs


def create_tables(dynamodb: Any, prefix: str = "stratus-test") -> dict[str, str]:
    names: dict[str, str] = {}
    for table in TABLES:
        name = f"{prefix}-{table.name}"
        dynamodb.create_table(**create_table_kwargs(table, name))
        ttl = ttl_kwargs(table, name)
        if ttl is not None:
            dynamodb.update_time_to_live(**ttl)
        names[table.name] = name
    return names

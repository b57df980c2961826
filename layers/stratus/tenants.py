"""Tenants and their API keys.

A key is shown once, at creation, and stored only as its SHA-256 hash: keys
are 256 random bits, so a fast hash is safe here (no dictionary to attack) and
lets the authorizer find the tenant with one strongly consistent GetItem.
Items: ``TENANT#<id>`` (the tenant) and ``KEY#<hash>`` (one per key).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from stratus import aws

KEY_PREFIX = "sk-stratus-"
_KEY_BODY_LEN = 43  # token_urlsafe(32)
MAX_KEY_LEN = 128


class Tenant(BaseModel):
    tenant_id: str
    name: str = Field(min_length=1, max_length=100)
    status: str = "active"
    created_at: str


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The key from an ``Authorization: Bearer <key>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LEN:
        return None
    return token


class TenantStore:
    def __init__(self, table_name: str, dynamodb: Any = None) -> None:
        self._table_name = table_name
        self._dynamodb = dynamodb  # a boto3 DynamoDB client; the shared one by default

    @property
    def _client(self) -> Any:
        return self._dynamodb or aws.client("dynamodb")

    def create(self, name: str) -> tuple[Tenant, str]:
        """Create a tenant with one API key; returns the key, which is never stored."""
        tenant = Tenant(
            tenant_id=uuid.uuid4().hex,
            name=name.strip(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        key = new_api_key()
        put_new = "attribute_not_exists(pk)"
        self._client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table_name,
                        "ConditionExpression": put_new,
                        "Item": {
                            "pk": {"S": f"TENANT#{tenant.tenant_id}"},
                            "name": {"S": tenant.name},
                            "status": {"S": tenant.status},
                            "created_at": {"S": tenant.created_at},
                        },
                    }
                },
                {
                    "Put": {
                        "TableName": self._table_name,
                        "ConditionExpression": put_new,
                        "Item": {
                            "pk": {"S": f"KEY#{hash_key(key)}"},
                            "tenant_id": {"S": tenant.tenant_id},
                            "tenant_name": {"S": tenant.name},
                            "status": {"S": "active"},
                            "created_at": {"S": tenant.created_at},
                        },
                    }
                },
            ]
        )
        return tenant, key

    def authenticate(self, key: str) -> Tenant | None:
        """The active tenant owning ``key``, or None. Never raises for a bad key."""
        if not key.startswith(KEY_PREFIX) or len(key) != len(KEY_PREFIX) + _KEY_BODY_LEN:
            return None
        item: dict[str, Any] | None = self._client.get_item(
            TableName=self._table_name,
            Key={"pk": {"S": f"KEY#{hash_key(key)}"}},
            ConsistentRead=True,
        ).get("Item")
        if not item or item.get("status", {}).get("S") != "active":
            return None
        return Tenant(
            tenant_id=item["tenant_id"]["S"],
            name=item.get("tenant_name", {}).get("S") or "unnamed",
            created_at=item.get("created_at", {}).get("S", ""),
        )

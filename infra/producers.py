"""Bound producers in the stage configuration: who may send to the ingest queue, for whom.

``cdk.json``, per stage::

    "producers": [
      {"principal": "arn:aws:iam::123456789012:role/orders-etl",
       "principal_id": "AROAEXAMPLEID", "tenants": ["<tenant id>", "..."]},
      {"principal": "arn:aws:iam::123456789012:root", "tenants": ["*"]},
      {"access_key": "local", "tenants": ["*"]}
    ]

* ``principal``: an IAM role, user or account root ARN. The ingest queue's resource
  policy admits only these (``SendMessage`` is denied to any other principal, whatever
  its IAM policies say). For a role or user also give ``principal_id``, the unique id
  AWS reports as the messages' ``SenderId`` (``aws iam get-role --role-name NAME
  --query Role.RoleId``; for a user, ``get-user ... User.UserId``): a role deleted and
  recreated under the same name gets a new id and is not trusted until you update it.
  The account root's id is its account number.
* ``access_key``: a **local-only** producer, identified by its access key id (the local
  cloud reports it as ``SenderId``); never part of the deployed queue policy.
* ``tenants``: the tenant ids it may submit jobs for; ``"*"``: every tenant.

No entry (the default): only the account root may send, for any tenant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

ANY_TENANT = "*"
PRINCIPAL_ARN = re.compile(
    r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):(?P<kind>root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$"
)
UNIQUE_ID = re.compile(r"^A[A-Z0-9]{15,127}$")


class Producer(BaseModel):
    """One producer principal and the tenants it may submit jobs for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: str | None = None
    principal_id: str | None = None
    access_key: str | None = Field(default=None, min_length=1, max_length=128)
    tenants: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_identity(self) -> Producer:
        if (self.principal is None) == (self.access_key is None):
            raise ValueError("a producer has either 'principal' (an IAM ARN) or 'access_key'")
        if self.principal is not None:
            match = PRINCIPAL_ARN.match(self.principal)
            if match is None:
                raise ValueError(f"{self.principal!r} is not an IAM role, user or account root ARN")
            unique = self.principal_id is not None and UNIQUE_ID.match(self.principal_id)
            if match["kind"] != "root" and not unique:
                raise ValueError(
                    f"{self.principal}: set principal_id to its unique id (AROA.../AIDA..., "
                    "from `aws iam get-role` / `get-user`): SQS reports it as SenderId"
                )
        elif self.principal_id is not None:
            raise ValueError("principal_id goes with principal, not with access_key")
        if any(not t.strip() for t in self.tenants):
            raise ValueError("tenant ids must not be empty")
        return self

    @property
    def sender_id(self) -> str:
        """What SQS reports as ``SenderId`` for this producer (without a role's session)."""
        if self.access_key is not None:
            return self.access_key
        assert self.principal is not None
        match = PRINCIPAL_ARN.match(self.principal)
        assert match is not None
        return match["account"] if match["kind"] == "root" else str(self.principal_id)


def sender_bindings(producers: Sequence[Producer]) -> dict[str, list[str]]:
    """``STRATUS_PRODUCERS``: sender id -> the tenants it may submit for (merged)."""
    bindings: dict[str, set[str]] = {}
    for producer in producers:
        bindings.setdefault(producer.sender_id, set()).update(producer.tenants)
    return {sender: sorted(tenants) for sender, tenants in sorted(bindings.items())}


def policy_principals(producers: Sequence[Producer]) -> list[str]:
    """The principal ARNs the deployed ingest queue admits (empty: only the account root)."""
    return sorted({p.principal for p in producers if p.principal is not None})

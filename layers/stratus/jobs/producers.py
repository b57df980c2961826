"""Bound producers: which sending principal may submit jobs for which tenants.

The ingest queue's resource policy admits only the stage's producer principals
(``StageConfig.producers``); the ingest function then maps each message's sender
(the SQS ``SenderId`` attribute) to the tenants it may submit for, so a producer can
never spend another tenant's budget or read another tenant's data.

``SenderId`` is what AWS reports for the caller of ``SendMessage``: the role id and
session for an assumed role (``AROA...:session``), the user id for an IAM user
(``AIDA...``), the account id for the account root. The local cloud reports the
caller's **access key id** (moto reports one constant; the local cloud fixes that).
The binding is keyed by those ids (``STRATUS_PRODUCERS``, JSON ``{id: [tenant id,
...]}``, ``"*"`` = every tenant); a role's session part is ignored.

* no binding configured (``STRATUS_PRODUCERS`` unset, in-process tests): every
  sender may submit for any tenant, as before;
* ``{}`` (a stage with no producers): only the account root may;
* otherwise only the listed ids, each for its tenants.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from stratus.errors import ConfigurationError

ANY_TENANT = "*"


class ProducerBindings:
    """Sender id -> the tenants it may submit jobs for."""

    def __init__(self, bindings: Mapping[str, Collection[str]] | None) -> None:
        self.bindings = None if bindings is None else {k: frozenset(v) for k, v in bindings.items()}

    @classmethod
    def from_json(cls, text: str) -> ProducerBindings:
        """From ``STRATUS_PRODUCERS``; an empty string is "no binding"."""
        if not text.strip():
            return cls(None)
        try:
            raw = json.loads(text)
        except ValueError:
            raise ConfigurationError("STRATUS_PRODUCERS is not JSON") from None
        if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(t, str) for t in v) for v in raw.values()
        ):
            raise ConfigurationError("STRATUS_PRODUCERS must map sender ids to tenant lists")
        return cls(raw)

    @property
    def enforced(self) -> bool:
        return self.bindings is not None

    def allows(self, sender_id: str, tenant_id: str, *, account_id: str = "") -> bool:
        """May ``sender_id`` (a message's ``SenderId``) submit a job for ``tenant_id``?"""
        if self.bindings is None:
            return True
        sender = sender_id.strip()
        if not sender:
            return False
        if not self.bindings:
            return bool(account_id) and sender == account_id
        tenants = self.bindings.get(sender)
        if tenants is None:
            tenants = self.bindings.get(sender.split(":", 1)[0], frozenset())
        return ANY_TENANT in tenants or tenant_id in tenants

"""The evaluation context of one request: what a flag's rule conditions may test.

The keys are a contract with the people who write flag documents (``docs/flags.md``):
``tenant_id``, ``tenant_tier``, ``tenant_hash``, ``agent``, ``release``, ``customer_id``
and ``stage``. Everything here comes from what the request already carries (the
authorizer's context, the served agent, the settings), so building it costs no round trip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

#: What a tenant is when nothing says otherwise (the tenants' own default).
DEFAULT_TIER = "standard"


def tenant_hash(tenant_id: str) -> int:
    """The first 8 bytes of SHA-256(``tenant_id``) as an unsigned big-endian integer.

    A ``MODULO_RANGE`` condition with ``BASE: 100`` on this value puts each tenant in a
    fixed bucket 0..99: a 10% rollout (``START: 0, END: 9``) picks the same tenants in
    every process and every region, and widening it to 20% keeps the first 10% in.
    A cryptographic hash keeps similar ids (``t-1``, ``t-2``) from clustering.
    """
    return int.from_bytes(hashlib.sha256(tenant_id.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class FlagContext:
    """One request as flag rules see it (strings are "" when the request has none)."""

    tenant_id: str
    agent: str
    stage: str
    tenant_tier: str = DEFAULT_TIER
    release: str = ""
    customer_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The context Powertools' rule engine is given."""
        return {
            "tenant_id": self.tenant_id,
            "tenant_tier": self.tenant_tier,
            "tenant_hash": tenant_hash(self.tenant_id),
            "agent": self.agent,
            "release": self.release,
            "customer_id": self.customer_id,
            "stage": self.stage,
        }

"""``stratus tenant set-tier``: change a tenant's service tier from an operator's shell.

The tier is written on the tenant item and on every one of its key items (the
authorizer reads only the key item), exactly as ``stratus tenant suspend`` marks them,
and audited as ``tenant.tier_changed``. Requests see the new tier once the
authorizer's cache (``authorizer_cache_s``) lets go of the old decision. Exit codes:
0 done, 1 refused (unknown tenant), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from infra.keys_cli import _audit, _safe, _store, _tenant, _where
from stratus.tenant_keys import TIERS


def _set_tier(args: argparse.Namespace) -> int:
    tenant = _tenant(args)
    store, clients = _store(args)
    keys = store.set_tier(tenant, args.tier)
    _audit(args, clients, tenant, "tenant.tier_changed", {"tier": args.tier, "keys": keys})
    if args.json:
        print(json.dumps({"tenant_id": tenant, "tier": args.tier, "keys": keys}))
    else:
        print(f"tenant {tenant}: tier {args.tier} ({keys} key(s) marked)")
    return 0


def add_tenant_commands(tenant_commands: Any) -> None:
    """``stratus tenant set-tier`` on the existing ``stratus tenant`` subcommands."""
    set_tier = tenant_commands.add_parser("set-tier", help="change the tenant's service tier")
    _where(set_tier)
    set_tier.add_argument("--tier", required=True, choices=TIERS, help="the new tier")
    set_tier.set_defaults(func=_safe(_set_tier))

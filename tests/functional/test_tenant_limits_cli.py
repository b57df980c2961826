"""``stratus tenant limits`` on moto: writes the tenant's own rate and cap, prints them,
audits the change; the functions then enforce them."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from infra.tenant_limits_cli import add_tenant_commands
from stratus.composition import Runtime
from stratus.config import Settings


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stratus")
    groups = parser.add_subparsers(dest="command", required=True)
    tenant = groups.add_parser("tenant").add_subparsers(dest="tenant_command", required=True)
    add_tenant_commands(tenant)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_tenant_limits_sets_prints_and_audits(
    cloud: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tenant", "limits", "--tenant", "tenant-a", "--rps", "2.5", "--burst", "5"]
    assert _run([*argv, "--max-queued-jobs", "7", "--table", cloud["tables"]["budgets"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"tenant_id": "tenant-a", "rps": 2.5, "burst": 5, "max_queued_jobs": 7}
    limiter = Runtime(Settings()).tenant_limits  # as a function builds it from the env
    rate = limiter.rate("tenant-a")
    assert rate is not None and (rate.rps, rate.burst) == (2.5, 5)
    assert limiter.max_queued_jobs("tenant-a") == 7
    assert limiter.rate("tenant-b") is None  # no default in this stage
    store = Runtime(Settings()).audit.store
    assert store is not None  # the audit table records the change
    found, _ = store.events("tenant-a", since=0, types=("budget.limits_changed",))
    assert [e.type for e in found] == ["budget.limits_changed"]


def test_tenant_limits_refuses_nonsense(cloud: dict[str, Any]) -> None:
    table = cloud["tables"]["budgets"]
    for bad in (["--rps", "0"], ["--burst", "x"], ["--max-queued-jobs", "-1"]):
        with pytest.raises(SystemExit, match="positive"):
            _run(["tenant", "limits", "--tenant", "t", *bad, "--table", table])

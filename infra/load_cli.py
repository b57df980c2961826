"""``stratus load``: a bounded Locust load test against the local cloud or a stage.

``stratus load --scenario invoke --users 10 --duration 30s`` ramps to 10 concurrent
clients (``--spawn-rate`` per second), holds until 30 s are over or
``--max-requests`` requests were made, and writes ``report.md`` (requests/s,
p50/p90/p99, errors by code, cost per task), ``summary.json`` and Locust's HTML
report with its charts into ``--out``. The target is the running local cloud
(``.stratus/local.json``, the default) or a deployed stack (``--stack``: its
``ApiUrl``, ``IngestQueueUrl`` and ``TenantsTableName`` outputs). Each run creates a
tenant of its own, so its spend and its errors are its own, unless ``--api-key``
names an existing one. On a deployed stage every task calls the real model: a run
costs money (see docs/load.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.load import report as load_report
from infra.load.runner import HTML_NAME, SCENARIOS, LoadPlan, parse_duration, run
from infra.paths import REPO_ROOT

DEFAULT_FACTS = REPO_ROOT / ".stratus" / "local.json"
DEFAULT_OUT = REPO_ROOT / ".stratus" / "load"
#: The default request bound: a forgotten ``--duration 1h`` still stops.
DEFAULT_MAX_REQUESTS = 20_000


@dataclass
class Target:
    """Where the load goes and how to make a tenant there."""

    name: str
    api_url: str
    queue_url: str
    tenants_table: str
    #: Builds the DynamoDB client that creates the run's tenant.
    dynamodb: Callable[[], Any]
    #: Environment of the Locust process: the producer's AWS endpoint and credentials.
    env: dict[str, str] = field(default_factory=dict)


def local_target(facts: dict[str, Any]) -> Target:
    """The local cloud of ``facts`` (``.stratus/local.json`` or ``LocalFacts.__dict__``)."""
    from infra.local.facts import LOCAL_CREDENTIALS

    endpoint = str(facts["aws_endpoint_url"])
    region = str(facts["region"])

    def dynamodb() -> Any:
        import boto3

        return boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
        )

    # The local producers are bound by access key: the local cloud's own is bound to
    # every tenant of the dev stage, so the queue scenario's messages become jobs.
    env = {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": region}
    return Target(
        name="local",
        api_url=str(facts["api_url"]),
        queue_url=str(facts.get("queue_urls", {}).get("ingest", "")),
        tenants_table=str(facts.get("tables", {}).get("tenants", "")),
        dynamodb=dynamodb,
        env=env,
    )


def stack_target(stack: str, region: str | None) -> Target:
    """A deployed stack, found by its outputs with the caller's AWS credentials."""
    import boto3

    from infra.operator_tables import find_output, stack_output
    from stratus.aws import AwsClients

    clients = AwsClients(boto3.session.Session(region_name=region))
    return Target(
        name=stack,
        api_url=stack_output(clients, stack, "ApiUrl"),
        queue_url=find_output(clients, stack, "IngestQueueUrl") or "",
        tenants_table=find_output(clients, stack, "TenantsTableName") or "",
        dynamodb=lambda: clients.client("dynamodb"),
        env={"AWS_DEFAULT_REGION": region} if region else {},
    )


def create_tenant(target: Target, name: str) -> tuple[str, str]:
    """A new tenant (every scope) for this run: ``(tenant_id, api_key)``."""
    from stratus.tenants import TenantStore

    if not target.tenants_table:
        raise SystemExit(f"{target.name}: no tenants table known; give --api-key")
    tenant, key = TenantStore(target.tenants_table, target.dynamodb()).create(name)
    return tenant.tenant_id, key


def read_usage(api_url: str, key: str) -> dict[str, Any] | None:
    """``GET /v1/usage?period=day`` of the key's tenant (None if it cannot be read)."""
    request = urllib.request.Request(  # noqa: S310 - the target API's own URL
        f"{api_url.rstrip('/')}/v1/usage?period=day",
        headers={"Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (urllib.error.URLError, ValueError, OSError):
        return None


def execute(
    target: Target,
    *,
    scenarios: tuple[str, ...],
    users: int,
    spawn_rate: float,
    duration_s: int,
    max_requests: int,
    out: Path,
    api_key: str | None = None,
    tenant_id: str = "",
    turns: int = 3,
    job_timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Run one bounded load test against ``target``; returns the summary (and writes it)."""
    if api_key is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        tenant_id, api_key = create_tenant(target, f"load-{stamp}")
    if "queue" in scenarios and not target.queue_url:
        raise SystemExit(f"{target.name}: no ingest queue known for the queue scenario")
    if "queue" in scenarios and not tenant_id:
        raise SystemExit("the queue scenario needs --tenant-id with --api-key")
    plan = LoadPlan(
        host=target.api_url,
        scenarios=scenarios,
        users=users,
        spawn_rate=spawn_rate,
        duration_s=duration_s,
        max_requests=max_requests,
        turns=turns,
        tenant_id=tenant_id,
        queue_url=target.queue_url if "queue" in scenarios else "",
        job_timeout_s=job_timeout_s,
        env=target.env,
    )
    before = read_usage(target.api_url, api_key)
    result = run(plan, api_key, out)
    after = read_usage(target.api_url, api_key)
    summary = load_report.summarize(
        result.stats_csv,
        result.failures_csv,
        result.summary,
        plan={
            "target": target.name,
            "host": target.api_url,
            "scenarios": list(scenarios),
            "users": users,
            "spawn_rate": spawn_rate,
            "duration_s": duration_s,
            "max_requests": max_requests,
            "tenant_id": tenant_id,
            "elapsed_s": round(result.elapsed_s, 1),
        },
        usage_before=before,
        usage_after=after,
    )
    load_report.write(out, summary, html_name=HTML_NAME if result.html.exists() else None)
    return summary


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load(args: argparse.Namespace) -> int:
    if args.stack:
        target = stack_target(args.stack, args.region)
    else:
        facts_path = Path(args.facts)
        if not facts_path.exists():
            raise SystemExit(
                f"no local cloud: {facts_path} is missing (start one with `stratus dev`, "
                "or give --stack)"
            )
        target = local_target(json.loads(facts_path.read_text(encoding="utf-8")))
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else DEFAULT_OUT / stamp
    try:
        summary = execute(
            target,
            scenarios=scenarios,
            users=args.users,
            spawn_rate=args.spawn_rate or float(args.users),
            duration_s=args.duration,
            max_requests=args.max_requests,
            out=out,
            # The environment keeps the key out of the process list (``ps`` shows argv).
            api_key=args.api_key or os.environ.get("STRATUS_LOAD_API_KEY") or None,
            tenant_id=args.tenant_id or "",
            turns=args.turns,
            job_timeout_s=args.job_timeout,
        )
    except (RuntimeError, ValueError) as exc:
        print(f"stratus load: {exc}", file=sys.stderr)
        return 1
    totals = summary["totals"]
    print(
        f"{totals['requests']} requests, {totals['requests_per_s']} requests/s, "
        f"error rate {totals['error_rate'] * 100:.1f} %; report: {out / 'report.md'}"
    )
    if args.max_error_rate is not None and totals["error_rate"] > args.max_error_rate:
        print(
            f"stratus load: error rate {totals['error_rate']:.4f} is over "
            f"--max-error-rate {args.max_error_rate}",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(commands: Any) -> None:
    """``stratus load`` (called from ``infra.cli.build_parser``)."""
    load = commands.add_parser(
        "load",
        help="a bounded Locust load test (local cloud or --stack): requests/s, latency, "
        "errors by code, cost per task",
    )
    load.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="invoke")
    load.add_argument("--users", type=_positive_int, default=10, help="concurrent clients")
    load.add_argument(
        "--spawn-rate", type=float, default=None, help="users started per second (default: all)"
    )
    load.add_argument("--duration", type=_duration, default=30, help="30s, 2m, ... (with ramp)")
    load.add_argument(
        "--max-requests",
        type=_positive_int,
        default=DEFAULT_MAX_REQUESTS,
        help=f"stop after this many requests (default {DEFAULT_MAX_REQUESTS:,})",
    )
    load.add_argument("--out", help="the report's folder (default .stratus/load/<time>)")
    where = load.add_mutually_exclusive_group()
    where.add_argument("--stack", help="a deployed Stratus stack (costs money: model calls)")
    where.add_argument("--local", action="store_true", help="the running local cloud (default)")
    load.add_argument("--region", help="the stack's region (with --stack)")
    load.add_argument("--facts", default=str(DEFAULT_FACTS), help="the local cloud's facts file")
    load.add_argument(
        "--api-key",
        help="use this tenant's key instead of a new tenant (or set STRATUS_LOAD_API_KEY)",
    )
    load.add_argument("--tenant-id", help="the --api-key's tenant (the queue scenario needs it)")
    load.add_argument("--turns", type=_positive_int, default=3, help="messages per session")
    load.add_argument(
        "--job-timeout", type=float, default=60.0, help="seconds a job may take to finish"
    )
    load.add_argument(
        "--max-error-rate",
        type=float,
        default=None,
        help="exit 1 when the error rate is over this fraction (scheduled runs)",
    )
    load.set_defaults(func=_load)

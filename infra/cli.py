"""The ``stratus`` command line.

``stratus tenant create --name acme`` creates a tenant and prints its API key,
once: only the key's hash is stored. The tenants table is found from
``--table``, ``STRATUS_TENANTS_TABLE``, or the outputs of a deployed stack
(``--stack Stratus-dev``). ``AWS_ENDPOINT_URL`` points it at a local cloud.

``stratus dlq list --queue <url|name>`` shows a dead-letter queue's messages with
the reason each was dead-lettered; ``stratus dlq redrive --queue <url|name>``
moves them back to the queue that feeds the DLQ (or ``--to``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.operator_tables import stack_output
from stratus.aws import AwsClients
from stratus.tenants import TIERS, TenantStore

TENANTS_OUTPUT = "TenantsTableName"
#: The command's AWS clients, new for every ``main()`` (``AWS_ENDPOINT_URL`` reaches a local cloud).
_CLIENTS = AwsClients()
BUDGETS_OUTPUT = "BudgetsTableName"


def _table(args: argparse.Namespace, output: str, env_var: str) -> str:
    """``--table``, the stack's ``output``, or ``env_var``."""
    if args.table:
        return str(args.table)
    if args.stack:
        return stack_output(_CLIENTS, args.stack, output)
    table = os.environ.get(env_var, "")
    if not table:
        raise SystemExit(f"give --table, --stack, or set {env_var}")
    return table


def _tenants_table(args: argparse.Namespace) -> str:
    return _table(args, TENANTS_OUTPUT, "STRATUS_TENANTS_TABLE")


def _tenant_create(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name or len(name) > 100:
        raise SystemExit("--name must be 1-100 characters")
    dynamodb = _CLIENTS.client("dynamodb")
    # A tenant created through a deployed stack lives in that stack's region (its keys name
    # it: docs/regions.md); --home-region says so explicitly, "none" opts out.
    home = args.home_region or (dynamodb.meta.region_name if args.stack else None)
    home = None if home in (None, "", "none") else home
    try:
        tenant, key = TenantStore(_tenants_table(args), dynamodb).create(
            name, tier=args.tier, home_region=home
        )
    except ValueError as problem:
        raise SystemExit(str(problem)) from None
    from infra.callback_keys_cli import first_key

    signing = first_key(tenant.tenant_id, stack=args.stack)
    callback = (
        {} if signing is None else {"callback_kid": signing.kid, "callback_secret": signing.secret}
    )
    if args.json:
        print(
            json.dumps(
                {
                    "tenant_id": tenant.tenant_id,
                    "name": tenant.name,
                    "tier": tenant.tier,
                    "home_region": tenant.home_region,
                    "api_key": key,
                    **callback,
                }
            )
        )
    else:
        print(f"tenant_id: {tenant.tenant_id}")
        print(f"name:      {tenant.name}")
        print(f"tier:      {tenant.tier}")
        print(f"region:    {tenant.home_region or '-'}")
        print(f"api_key:   {key}")
        for field, value in callback.items():
            print(f"{field + ':':<11}{value}")
        print("Store the key (and the callback secret) now: each is shown once.", file=sys.stderr)
    return 0


def _quiet_moto() -> None:
    """moto's server logs every AWS call through werkzeug; function logs are what matter."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _budgets_table(args: argparse.Namespace) -> str:
    return _table(args, BUDGETS_OUTPUT, "STRATUS_BUDGETS_TABLE")


def _budget_set(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from stratus.composition import Runtime
    from stratus.config import Settings

    def usd(value: str | None, flag: str) -> Decimal | None:
        if value is None:
            return None
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise SystemExit(f"{flag} must be a number of USD") from None
        if amount < 0:
            raise SystemExit(f"{flag} must be >= 0")
        return amount

    daily = usd(args.daily_usd, "--daily-usd")
    monthly = usd(args.monthly_usd, "--monthly-usd")
    if daily is None and monthly is None:
        raise SystemExit("give --daily-usd and/or --monthly-usd")
    ledger = Runtime(Settings(budgets_table=_budgets_table(args)), clients=_CLIENTS).budgets
    ledger.set_tenant_limits(args.tenant, daily_usd=daily, monthly_usd=monthly)
    from infra.audit_cli import record_operator_event

    record_operator_event(
        _CLIENTS,
        args.tenant,
        "budget.limits_changed",
        {"daily_usd": args.daily_usd, "monthly_usd": args.monthly_usd},
        stack=args.stack,
    )
    limits = ledger.tenant_limits(args.tenant)
    print(
        json.dumps(
            {
                "tenant_id": args.tenant,
                "daily_usd": None if limits.daily_usd is None else str(limits.daily_usd),
                "monthly_usd": None if limits.monthly_usd is None else str(limits.monthly_usd),
            }
        )
    )
    return 0


def _dev(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from infra.local.cloud import LocalCloud, print_banner

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s", stream=sys.stderr)
    _quiet_moto()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    state = Path(args.state_file) if args.state_file else None
    with LocalCloud(
        api_port=args.api_port,
        aws_port=args.aws_port,
        ws_port=args.ws_port,
        console_port=args.console_port,
        state_file=state,
    ) as cloud:
        assert cloud.facts is not None
        print_banner(cloud.facts)
        stop.wait()
        print("Stopping the local cloud...", file=sys.stderr, flush=True)
    print("Stopped.", file=sys.stderr, flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from infra.local.demo import run_demo

    if args.verbose:
        _quiet_moto()
    return run_demo(verbose=args.verbose, fresh=args.fresh)


def _queue_url(sqs: Any, queue: str) -> str:
    """A queue URL from a URL or a queue name."""
    if queue.startswith(("http://", "https://")):
        return queue
    return str(sqs.get_queue_url(QueueName=queue)["QueueUrl"])


def _peek(sqs: Any, url: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` messages, each seen once; they become visible again right away."""
    seen: dict[str, dict[str, Any]] = {}
    empty = 0
    while len(seen) < limit and empty < 2:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, limit - len(seen)),
            VisibilityTimeout=30,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        fresh = [m for m in got if m["MessageId"] not in seen]
        empty = 0 if fresh else empty + 1
        for message in fresh:
            seen[message["MessageId"]] = message
    for message in seen.values():  # hand them back: listing must not hide them
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return list(seen.values())


def _dlq_list(args: argparse.Namespace) -> int:
    sqs = _CLIENTS.client("sqs")
    url = _queue_url(sqs, args.queue)
    messages = _peek(sqs, url, args.max)
    rows = []
    for message in messages:
        attributes = {
            name: value.get("StringValue", "")
            for name, value in message.get("MessageAttributes", {}).items()
        }
        rows.append(
            {
                "message_id": message["MessageId"],
                "reason": attributes.get("stratus_reason", "max_receive_count_exceeded"),
                "detail": attributes.get("stratus_detail", ""),
                "receive_count": message.get("Attributes", {}).get("ApproximateReceiveCount"),
                "sent_at": message.get("Attributes", {}).get("SentTimestamp"),
                "body": message.get("Body", ""),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} message(s) in {url}")
    for row in rows:
        body = row["body"] if len(row["body"]) <= 120 else row["body"][:117] + "..."
        print(f"- {row['message_id']}  reason={row['reason']}  {row['detail']}".rstrip())
        print(f"    {body}")
    return 0


def _dlq_redrive(args: argparse.Namespace) -> int:
    """Move messages back to the source queue (the one whose redrive policy names this DLQ).

    SQS StartMessageMoveTask does this in AWS, but the local endpoint (moto) lacks
    it, so the move is receive -> send -> delete, one message at a time: a crash
    in between duplicates a message (harmless: jobs are idempotent), never loses one.
    """
    sqs = _CLIENTS.client("sqs")
    url = _queue_url(sqs, args.queue)
    target = args.to
    if not target:
        sources = sqs.list_dead_letter_source_queues(QueueUrl=url).get("queueUrls", [])
        if len(sources) != 1:
            raise SystemExit(f"give --to: {len(sources)} queues use {url} as their DLQ")
        target = sources[0]
    target = _queue_url(sqs, target)
    # Only what is in the DLQ now: a message that fails again comes back as a new
    # message (sent after we started) and must not be redriven in a loop.
    started_ms = int(time.time() * 1000)
    moved = 0
    done = False
    while moved < args.max and not done:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, args.max - moved),
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["SentTimestamp"],
        ).get("Messages", [])
        if not got:
            break
        for message in got:
            if done or int(message["Attributes"]["SentTimestamp"]) >= started_ms:
                done = True
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
                continue
            attributes = {
                name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
                for name, value in message.get("MessageAttributes", {}).items()
                if "StringValue" in value and not name.startswith("stratus_")
            }
            kwargs: dict[str, Any] = {"QueueUrl": target, "MessageBody": message["Body"]}
            if attributes:
                kwargs["MessageAttributes"] = attributes
            sqs.send_message(**kwargs)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    print(f"moved {moved} message(s) from {url} to {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    from infra import tenant_limits_cli

    tenant_limits_cli.add_tenant_commands(tenant_commands)
    create = tenant_commands.add_parser("create", help="create a tenant and print its API key")
    create.add_argument("--name", required=True)
    where = create.add_mutually_exclusive_group()
    where.add_argument("--table", help="the tenants table name")
    where.add_argument("--stack", help="a deployed Stratus stack to read the table name from")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.add_argument("--tier", default="standard", choices=TIERS, help="the service tier")
    create.add_argument(
        "--home-region", help="the tenant's home region (default: the --stack's region)"
    )
    create.set_defaults(func=_tenant_create)
    from infra import keys_cli

    keys_cli.add_parser(commands)
    keys_cli.add_tenant_parsers(tenant_commands)
    from infra import tenant_tier_cli

    tenant_tier_cli.add_tenant_commands(tenant_commands)

    dlq = commands.add_parser("dlq", help="inspect and redrive dead-letter queues")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_commands.add_parser("list", help="show the messages of a DLQ and their reasons")
    listing.add_argument("--queue", required=True, help="the DLQ's URL or name")
    listing.add_argument("--max", type=int, default=50, help="at most this many messages")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_dlq_list)
    redrive = dlq_commands.add_parser("redrive", help="move a DLQ's messages back to its source")
    redrive.add_argument("--queue", required=True, help="the DLQ's URL or name")
    redrive.add_argument("--to", help="the target queue (default: the DLQ's source queue)")
    redrive.add_argument("--max", type=int, default=1000, help="at most this many messages")
    redrive.set_defaults(func=_dlq_redrive)

    from infra.local.cloud import DEFAULT_API_PORT, DEFAULT_AWS_PORT
    from infra.paths import REPO_ROOT

    budget = commands.add_parser("budget", help="manage tenant budgets")
    budget_commands = budget.add_subparsers(dest="budget_command", required=True)
    budget_set = budget_commands.add_parser(
        "set", help="set a tenant's daily and/or monthly limit in USD (others keep defaults)"
    )
    budget_set.add_argument("--tenant", required=True)
    budget_set.add_argument("--daily-usd")
    budget_set.add_argument("--monthly-usd")
    budget_where = budget_set.add_mutually_exclusive_group()
    budget_where.add_argument("--table", help="the budgets table name")
    budget_where.add_argument("--stack", help="a deployed Stratus stack to read the table from")
    budget_set.set_defaults(func=_budget_set)

    from infra import eval_cli

    eval_cli.add_parser(commands)
    from infra import (
        audit_cli,
        callback_keys_cli,
        canary_cli,
        releases_cli,
        review_cli,
        rollback_cli,
    )

    review_cli.add_parser(commands)
    audit_cli.add_parser(commands)
    callback_keys_cli.add_parser(commands)
    releases_cli.add_parser(commands)
    canary_cli.add_parser(commands)
    rollback_cli.add_parser(commands)
    from infra import cost_cli

    cost_cli.add_parser(commands)
    from infra import flags_cli

    flags_cli.add_parser(commands)
    from infra import load_cli

    load_cli.add_parser(commands)

    dev = commands.add_parser("dev", help="run the whole app on the embedded local cloud")
    dev.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="0 = any free port")
    dev.add_argument("--aws-port", type=int, default=DEFAULT_AWS_PORT, help="0 = any free port")
    dev.add_argument(
        "--ws-port", type=int, default=8782, help="the WebSocket API's port; 0 = any free port"
    )
    dev.add_argument(
        "--console-port", type=int, default=8783, help="the web console's port; 0 = any free port"
    )
    dev.add_argument(
        "--state-file",
        default=str(REPO_ROOT / ".stratus" / "local.json"),
        help="where to write the running cloud's facts (removed on stop)",
    )
    dev.set_defaults(func=_dev)

    demo = commands.add_parser(
        "demo",
        help="walk through every execution model: on the running local cloud (stratus dev) if "
        "there is one, else on one started for the walk-through and stopped after it",
    )
    demo.add_argument(
        "--verbose",
        action="store_true",
        help="stream function, gateway and moto logs to the console (default: .stratus/demo.log)",
    )
    demo.add_argument(
        "--fresh",
        action="store_true",
        help="start a new local cloud even if one is running",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global _CLIENTS
    args = build_parser().parse_args(argv)
    _CLIENTS = AwsClients()  # this run's environment, whatever an earlier run in-process saw
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``stratus`` command line.

``stratus tenant create --name acme`` creates a tenant and prints its API key,
once: only the key's hash is stored. The tenants table is found from
``--table``, ``STRATUS_TENANTS_TABLE``, or the outputs of a deployed stack
(``--stack Stratus-dev``). ``AWS_ENDPOINT_URL`` points it at a local cloud.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stratus import aws
from stratus.tenants import TenantStore

TENANTS_OUTPUT = "TenantsTableName"


def _tenants_table(args: argparse.Namespace) -> str:
    if args.table:
        return str(args.table)
    if args.stack:
        stacks = aws.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"]
        for output in stacks[0].get("Outputs", []):
            if output["OutputKey"] == TENANTS_OUTPUT:
                return str(output["OutputValue"])
        raise SystemExit(f"stack {args.stack} has no {TENANTS_OUTPUT} output")
    table = os.environ.get("STRATUS_TENANTS_TABLE", "")
    if not table:
        raise SystemExit("give --table, --stack, or set STRATUS_TENANTS_TABLE")
    return table


def _tenant_create(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name or len(name) > 100:
        raise SystemExit("--name must be 1-100 characters")
    tenant, key = TenantStore(_tenants_table(args)).create(name)
    if args.json:
        print(json.dumps({"tenant_id": tenant.tenant_id, "name": tenant.name, "api_key": key}))
    else:
        print(f"tenant_id: {tenant.tenant_id}")
        print(f"name:      {tenant.name}")
        print(f"api_key:   {key}")
        print("Store the key now: it is shown once and only its hash is kept.", file=sys.stderr)
    return 0


def _quiet_moto() -> None:
    """moto's server logs every AWS call through werkzeug; function logs are what matter."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)


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
    with LocalCloud(api_port=args.api_port, aws_port=args.aws_port, state_file=state) as cloud:
        assert cloud.facts is not None
        print_banner(cloud.facts)
        stop.wait()
        print("Stopping the local cloud...", file=sys.stderr, flush=True)
    print("Stopped.", file=sys.stderr, flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from infra.local.demo import run_demo

    _quiet_moto()
    return run_demo(quiet_functions=not args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_commands.add_parser("create", help="create a tenant and print its API key")
    create.add_argument("--name", required=True)
    where = create.add_mutually_exclusive_group()
    where.add_argument("--table", help="the tenants table name")
    where.add_argument("--stack", help="a deployed Stratus stack to read the table name from")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(func=_tenant_create)

    from infra.local.cloud import DEFAULT_API_PORT, DEFAULT_AWS_PORT
    from infra.paths import REPO_ROOT

    dev = commands.add_parser("dev", help="run the whole app on the embedded local cloud")
    dev.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="0 = any free port")
    dev.add_argument("--aws-port", type=int, default=DEFAULT_AWS_PORT, help="0 = any free port")
    dev.add_argument(
        "--state-file",
        default=str(REPO_ROOT / ".stratus" / "local.json"),
        help="where to write the running cloud's facts (removed on stop)",
    )
    dev.set_defaults(func=_dev)

    demo = commands.add_parser("demo", help="start the local cloud, walk through it, stop")
    demo.add_argument("--verbose", action="store_true", help="stream function logs too")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

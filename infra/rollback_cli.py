"""``stratus rollback``: back to the stable version of an agent, by hand.

* Locally (no ``--stage``/``--stack``): the running local cloud drops the agent's
  candidate (``POST /_stratus/canary/{agent}/rollback``); the stable version gets 100%.
* On AWS (``--stage S`` means the stack ``Stratus-S``, or ``--stack NAME``): for each
  of the agent's functions with a ``live`` alias (its API function and job worker):

  - a CodeDeploy deployment in progress for it is stopped with
    ``stop_deployment(autoRollbackEnabled=True)``;
  - during a traffic shift the alias points at the old version and routes a share to
    the new one (``RoutingConfig.AdditionalVersionWeights``): the share is removed, so
    the old version serves everything;
  - otherwise the alias moves to the highest published version below the one it
    points at (``update_alias``).

Exit 0 when done (or nothing to do), 2 when the stack, functions or alias are missing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.eval_targets import UsageError
from infra.paths import REPO_ROOT

LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
LIVE_ALIAS = "live"
ACTIVE = ["Created", "Queued", "InProgress", "Ready"]


def add_parser(commands: Any) -> None:
    """Register ``rollback`` on the ``stratus`` command's sub-parsers."""
    p = commands.add_parser("rollback", help="back to an agent's stable version (local or AWS)")
    p.add_argument("--agent", required=True)
    p.add_argument("--stage", help="a deployed stage (its stack Stratus-<stage>)")
    p.add_argument("--stack", help="a deployed stack by name")
    p.add_argument("--region", help="AWS region of --stage / --stack")
    p.add_argument(
        "--function",
        action="append",
        metavar="NAME",
        help="the agent's function(s) on AWS (default: found in the stack)",
    )
    p.add_argument("--state-file", type=Path, default=LOCAL_FACTS, help="the local cloud's facts")
    p.set_defaults(func=main)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def agent_functions(cloudformation: Any, stack: str, agent: str) -> list[str]:
    """The physical names of the agent's functions in ``stack`` (API function and worker)."""
    from botocore.exceptions import BotoCoreError, ClientError

    pattern = re.compile(rf"(Agent|Worker){_pascal(agent)}(Function)?[0-9A-F]{{8}}$")
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
        resources = [r for page in pages for r in page["StackResourceSummaries"]]
    except (ClientError, BotoCoreError) as error:
        raise UsageError(f"--stack {stack}: {error}") from None
    return sorted(
        r["PhysicalResourceId"]
        for r in resources
        if r["ResourceType"] == "AWS::Lambda::Function" and pattern.search(r["LogicalResourceId"])
    )


def stop_deployments(codedeploy: Any, agent: str, out: Any) -> list[str]:
    """Stop (with automatic rollback) every active deployment whose group names the agent."""
    wanted = {agent.lower().replace("_", ""), _pascal(agent).lower()}
    stopped = []
    for deployment_id in codedeploy.list_deployments(includeOnlyStatuses=ACTIVE).get(
        "deployments", []
    ):
        info = codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        group = str(info.get("deploymentGroupName", "")).lower().replace("_", "").replace("-", "")
        if not any(w in group for w in wanted):
            continue
        codedeploy.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=True)
        print(f"stopped deployment {deployment_id} ({info.get('deploymentGroupName')})", file=out)
        stopped.append(deployment_id)
    return stopped


def roll_back_alias(lambda_client: Any, function: str, out: Any) -> str | None:
    """Point ``function``'s ``live`` alias at the previous version; the version it serves."""
    from botocore.exceptions import ClientError

    try:
        alias = lambda_client.get_alias(FunctionName=function, Name=LIVE_ALIAS)
    except ClientError as error:
        raise UsageError(f"{function}: no {LIVE_ALIAS} alias ({error})") from None
    current = str(alias["FunctionVersion"])
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    if weights:
        # A shift in progress: the alias still points at the old version; drop the share.
        lambda_client.update_alias(
            FunctionName=function,
            Name=LIVE_ALIAS,
            FunctionVersion=current,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        shifted = ", ".join(sorted(weights))
        print(f"{function}: {LIVE_ALIAS} -> {current} (traffic to {shifted} removed)", file=out)
        return current
    versions: list[int] = []
    for page in lambda_client.get_paginator("list_versions_by_function").paginate(
        FunctionName=function
    ):
        versions += [int(v["Version"]) for v in page["Versions"] if v["Version"].isdigit()]
    below = [v for v in versions if current.isdigit() and v < int(current)]
    if not below:
        print(f"{function}: {LIVE_ALIAS} is on {current}, no earlier version", file=out)
        return None
    previous = str(max(below))
    lambda_client.update_alias(
        FunctionName=function,
        Name=LIVE_ALIAS,
        FunctionVersion=previous,
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    print(f"{function}: {LIVE_ALIAS} {current} -> {previous}", file=out)
    return previous


def aws_rollback(args: argparse.Namespace, session: Any, out: Any) -> int:
    stack = args.stack or f"Stratus-{args.stage}"
    functions: Sequence[str] = args.function or agent_functions(
        session.client("cloudformation"), stack, args.agent
    )
    if not functions:
        raise UsageError(f"--stack {stack}: no functions of agent {args.agent!r}")
    stop_deployments(session.client("codedeploy"), args.agent, out)
    client = session.client("lambda")
    for function in functions:
        roll_back_alias(client, function, out)
    return 0


def local_rollback(args: argparse.Namespace, out: Any) -> int:
    from infra.canary_cli import Cloud

    result = Cloud(args.state_file).canary(args.agent, "rollback", {})
    dropped = result.get("dropped") or {}
    if not dropped:
        print(f"{args.agent}: no candidate on the local cloud; the stable version serves", file=out)
        return 0
    shown = ", ".join(f"{name}:{label}" for name, label in sorted(dropped.items()))
    print(f"{args.agent}: dropped the candidate ({shown}); the stable version serves", file=out)
    return 0


def run(args: argparse.Namespace, out: Any = sys.stdout, session: Any = None) -> int:
    if args.stage or args.stack or args.function:
        if session is None:
            import boto3

            session = boto3.session.Session(region_name=args.region)
        return aws_rollback(args, session, out)
    return local_rollback(args, out)


def main(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except UsageError as error:
        print(f"stratus rollback: {error}", file=sys.stderr)
        return 2

"""``stratus releases``: what release of an agent runs where, and what changed between two.

* ``stratus releases --agent A [--stack NAME | --stage S] [--region R] [--json]`` lists
  what is deployed: on AWS, for each of the agent's functions (its API function and its
  job worker), the ``live`` alias, the version(s) it points at with their weights, and
  each version's release id (from the version's description, which the stack writes as
  ``<release> <plan key>``, else its ``STRATUS_RELEASE``); without ``--stack``/``--stage``,
  the running local cloud (``.stratus/local.json``): the release the agent's function
  reports on ``/v1/health`` (invoked through the local Lambda front, no model call). The
  working tree's release is shown beside it either way.
* ``stratus releases diff --agent A OLD NEW`` says what changed between two releases:
  OLD and NEW are each a git ref (of ``--repo``, default this repository), a path to an
  agent package (a directory with the agent's ``__init__.py``) or to a checkout, or
  ``working`` (the working tree). Each side's manifest is built in a subprocess from
  that tree (``git archive`` of the ref's ``functions/`` and ``layers/`` into a temp
  dir); the output is :func:`stratus.releases.changes` (model, tools, prompt lines, ...)
  and both release ids. A tree without ``layers/stratus/releases.py`` (older than
  releases) is hashed with this checkout's ``stratus``.

Both sides are hashed with the same settings: this shell's ``STRATUS_*`` variables over
the defaults (a stage's tiers and budgets come from its environment; a release id
printed here matches the deployed one when the settings match).

Exit codes: 0 done, 2 unusable options, an unknown agent or ref, an unreachable stack
or local cloud.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from infra.paths import REPO_ROOT

LIVE_ALIAS = "live"
WORKING = "working"
LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
RELEASE_ID = re.compile(r"\br-[0-9a-f]{12}\b")
RELEASE_ENV = "STRATUS_RELEASE"
#: How long one side's manifest may take to build (an import of one agent package).
MANIFEST_TIMEOUT_S = 120

__all__ = ["add_parser", "deployed", "local_release", "main", "manifest_of"]


class UsageError(Exception):
    """An option, agent, ref or target that cannot be used (exit code 2)."""


# -- manifests of a tree --------------------------------------------------------------

#: Run in a fresh interpreter (``-I``): sys.argv = [root, layers, agent, package or ""].
_MANIFEST_SCRIPT = """
import importlib.util, json, sys
root, layers, agent, package = sys.argv[1:5]
sys.path[:0] = [layers, root]
if package:
    import functions.agents
    name = "functions.agents." + agent
    spec_ = importlib.util.spec_from_file_location(
        name, package + "/__init__.py", submodule_search_locations=[package]
    )
    module = importlib.util.module_from_spec(spec_)
    sys.modules[name] = module
    spec_.loader.exec_module(module)
    spec = module.SPEC
else:
    from functions.agents import load_agent
    spec = load_agent(agent)
from stratus.config import Settings
from stratus.releases import manifest, release_id
document = manifest(spec, Settings())
print(json.dumps({"release": release_id(document), "manifest": document}))
"""


def _tree_layers(root: Path) -> Path:
    """The tree's own ``layers`` if it has releases; else this checkout's."""
    if (root / "layers" / "stratus" / "releases.py").is_file():
        return root / "layers"
    return REPO_ROOT / "layers"


def _run_manifest(root: Path, agent: str, package: Path | None) -> dict[str, Any]:
    command = [
        sys.executable,
        "-I",
        "-c",
        _MANIFEST_SCRIPT,
        str(root),
        str(_tree_layers(root)),
        agent,
        str(package) if package is not None else "",
    ]
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            command,
            capture_output=True,
            text=True,
            timeout=MANIFEST_TIMEOUT_S,
            cwd=root,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"building the manifest of {agent} in {root} timed out") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UsageError(f"cannot load agent {agent!r} from {root}: {last}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def _git_tree(repo: Path, ref: str) -> Iterator[Path]:
    """``functions/`` and ``layers/`` of ``ref`` in a temp dir (``git archive``)."""
    check = subprocess.run(  # noqa: S603
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise UsageError(f"{ref!r} is not a path, 'working', or a git ref of {repo}")
    commit = check.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="stratus-release-") as tmp:
        listed = subprocess.run(  # noqa: S603
            ["git", "-C", str(repo), "ls-tree", "--name-only", commit],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        parts = [p for p in ("functions", "layers") if p in listed]
        if "functions" not in parts:
            raise UsageError(f"{ref!r} has no functions/ directory")
        archive = subprocess.run(  # noqa: S603
            ["git", "-C", str(repo), "archive", "--format=tar", commit, *parts],  # noqa: S607
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(  # noqa: S603
            ["tar", "-x", "-C", tmp],  # noqa: S607
            input=archive,
            check=True,
        )
        yield Path(tmp)


def manifest_of(where: str, agent: str, *, repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"release", "manifest"}`` of ``agent`` at ``where`` (see the module doc)."""
    if where == WORKING:
        return _run_manifest(repo, agent, None)
    path = Path(where).expanduser()
    if path.exists():
        path = path.resolve()
        if (path / "functions" / "agents").is_dir():  # a checkout
            return _run_manifest(path, agent, None)
        if (path / "__init__.py").is_file():  # an agent package, with this tree's others
            return _run_manifest(repo, agent, path)
        raise UsageError(f"{where}: neither an agent package nor a checkout")
    with _git_tree(repo, where) as tree:
        return _run_manifest(tree, agent, None)


def diff(agent: str, old: str, new: str, *, repo: Path = REPO_ROOT) -> dict[str, Any]:
    from stratus.releases import changes

    before, after = manifest_of(old, agent, repo=repo), manifest_of(new, agent, repo=repo)
    return {
        "agent": agent,
        "old": {"ref": old, "release": before["release"]},
        "new": {"ref": new, "release": after["release"]},
        "same": before["release"] == after["release"],
        "changes": changes(before["manifest"], after["manifest"]),
    }


def _print_diff(result: Mapping[str, Any], out: TextIO) -> None:
    old, new = result["old"], result["new"]
    print(f"agent {result['agent']}", file=out)
    print(f"  old  {old['release']}  {old['ref']}", file=out)
    print(f"  new  {new['release']}  {new['ref']}", file=out)
    if result["same"]:
        print("the same release: nothing changed", file=out)
        return
    print("changes:", file=out)
    for line in result["changes"]:
        print(f"  {line}", file=out)


# -- what is deployed -----------------------------------------------------------------


def release_of_version(config: Mapping[str, Any]) -> str | None:
    """The release id of a function version: its description, else its environment."""
    match = RELEASE_ID.search(str(config.get("Description") or ""))
    if match:
        return match.group(0)
    env = (config.get("Environment") or {}).get("Variables") or {}
    return env.get(RELEASE_ENV) or None


def deployed(lambda_client: Any, functions: Mapping[str, str]) -> list[dict[str, Any]]:
    """Per function (``kind -> physical name``): the ``live`` alias, its versions, weights
    and each version's release id. A function without the alias is listed as such."""
    from botocore.exceptions import ClientError

    rows: list[dict[str, Any]] = []
    for kind, name in sorted(functions.items()):
        row: dict[str, Any] = {"function": kind, "name": name, "alias": LIVE_ALIAS}
        try:
            alias = lambda_client.get_alias(FunctionName=name, Name=LIVE_ALIAS)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code != "ResourceNotFoundException":
                raise UsageError(f"{name}: {error}") from None
            row.update(alias=None, versions=[])
            rows.append(row)
            continue
        extra = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        weights = {alias["FunctionVersion"]: 1.0 - sum(float(w) for w in extra.values())}
        weights.update({str(v): float(w) for v, w in extra.items()})
        versions = []
        for version, weight in weights.items():
            config = lambda_client.get_function_configuration(FunctionName=name, Qualifier=version)
            versions.append(
                {
                    "version": version,
                    "weight": round(weight, 4),
                    "release": release_of_version(config),
                    "description": config.get("Description", ""),
                }
            )
        row["versions"] = versions
        rows.append(row)
    return rows


def stack_agent_functions(cloudformation: Any, stack: str, agent: str) -> dict[str, str]:
    """``{"api": name, "worker": name}`` of the agent's functions in ``stack`` (CDK's
    logical ids ``...Agent<Pascal>Function<hash>`` and ``...Worker<Pascal>Function<hash>``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    pascal = "".join(part.capitalize() for part in agent.split("_"))
    patterns = {
        "api": re.compile(rf"Agent{pascal}Function[0-9A-F]{{8}}$"),
        "worker": re.compile(rf"Worker{pascal}Function[0-9A-F]{{8}}$"),
    }
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
        resources = [r for page in pages for r in page["StackResourceSummaries"]]
    except (ClientError, BotoCoreError) as error:
        raise UsageError(f"--stack {stack}: {error}") from None
    found: dict[str, str] = {}
    for resource in resources:
        if resource["ResourceType"] != "AWS::Lambda::Function":
            continue
        for kind, pattern in patterns.items():
            if pattern.search(resource["LogicalResourceId"]):
                found[kind] = resource["PhysicalResourceId"]
    if not found:
        raise UsageError(f"--stack {stack}: no function of agent {agent} in the stack")
    return found


def local_release(facts: Mapping[str, Any], agent: str) -> dict[str, Any]:
    """What the local cloud's function of ``agent`` serves: its ``/v1/health`` answer,
    invoked through the local Lambda front (``$LATEST``: the primary version)."""
    import boto3

    name = (facts.get("functions") or {}).get(f"agent:{agent}")
    if not name:
        raise UsageError(f"the local cloud runs no function of agent {agent}")
    client = boto3.client(
        "lambda",
        endpoint_url=facts["aws_endpoint_url"],
        region_name=facts.get("region") or "us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the local cloud's fixed credentials
        aws_session_token="local",  # noqa: S106
    )
    event = {
        "resource": "/v1/health",
        "path": "/v1/health",
        "httpMethod": "GET",
        "headers": {},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"requestId": "stratus-releases", "path": "/v1/health"},
        "body": None,
        "isBase64Encoded": False,
    }
    try:
        reply = client.invoke(FunctionName=name, Qualifier="$LATEST", Payload=json.dumps(event))
        answer = json.loads(reply["Payload"].read() or b"{}")
        body = json.loads(answer.get("body") or "{}")
    except Exception as error:
        raise UsageError(f"the local cloud did not answer: {error}") from None
    return {
        "function": "api",
        "name": name,
        "release": body.get("release"),
        "prompt_version": body.get("prompt_version"),
        "status": body.get("status"),
    }


def _working_release(agent: str) -> dict[str, Any]:
    from functions.agents import load_agent
    from stratus.config import Settings
    from stratus.releases import release_of

    spec = load_agent(agent)
    return {"release": release_of(spec, Settings()), "prompt_version": spec.prompt_version}


def _list(args: argparse.Namespace, out: TextIO) -> int:
    from functions.agents import agent_names

    agent = args.agent
    if agent not in agent_names():
        raise UsageError(f"no agent named {agent!r}; agents: {', '.join(agent_names())}")
    result: dict[str, Any] = {"agent": agent, "working": _working_release(agent)}
    if args.stack or args.stage:
        import boto3

        stack = args.stack or f"Stratus-{args.stage}"
        session = boto3.session.Session(region_name=args.region)
        functions = stack_agent_functions(session.client("cloudformation"), stack, agent)
        result.update(
            target=f"stack {stack}", functions=deployed(session.client("lambda"), functions)
        )
    else:
        path = Path(args.state_file)
        if not path.is_file():
            raise UsageError(
                f"no local cloud is running ({path} is missing); start one with `stratus dev`, "
                "or pass --stack NAME / --stage S"
            )
        facts = json.loads(path.read_text(encoding="utf-8"))
        result.update(target="local cloud", functions=[local_release(facts, agent)])
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
        return 0
    working = result["working"]
    print(f"agent {agent}  ({result['target']})", file=out)
    print(f"  working tree  {working['release']}  prompt {working['prompt_version']}", file=out)
    for row in result["functions"]:
        if "versions" not in row:  # the local cloud
            print(
                f"  {row['function']:<7} {row['name']}  serves {row['release']}  "
                f"prompt {row['prompt_version']}",
                file=out,
            )
            continue
        if row["alias"] is None:
            print(f"  {row['function']:<7} {row['name']}  no '{LIVE_ALIAS}' alias", file=out)
            continue
        shares = ", ".join(
            f"version {v['version']} {v['weight']:.0%} {v['release'] or '(no release id)'}"
            for v in row["versions"]
        )
        print(f"  {row['function']:<7} {row['name']}  {LIVE_ALIAS} -> {shares}", file=out)
    return 0


def _diff(args: argparse.Namespace, out: TextIO) -> int:
    result = diff(args.agent, args.old, args.new, repo=Path(args.repo))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
    else:
        _print_diff(result, out)
    return 0


# -- the command ----------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    """Register ``releases`` (and ``releases diff``) on the ``stratus`` sub-parsers."""
    p = commands.add_parser(
        "releases", help="what release of an agent is deployed where, and what changed"
    )
    p.add_argument("--agent", help="the agent (required)")
    p.add_argument("--stack", help="a deployed stack (default: the running local cloud)")
    p.add_argument("--stage", help="the stage whose stack (Stratus-<stage>) --stack means")
    p.add_argument("--region", default=os.environ.get("AWS_REGION"), help="AWS region")
    p.add_argument(
        "--state-file",
        default=str(LOCAL_FACTS),
        help="the running local cloud's facts (default .stratus/local.json)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=main, action=_list)
    sub = p.add_subparsers(dest="releases_command", metavar="{diff}")
    d = sub.add_parser("diff", help="what changed between two releases of the agent")
    d.add_argument("--agent", default=argparse.SUPPRESS, help="the agent")
    d.add_argument("old", help="a git ref, a path (agent package or checkout), or 'working'")
    d.add_argument("new", help="a git ref, a path (agent package or checkout), or 'working'")
    d.add_argument("--repo", default=str(REPO_ROOT), help="the git repository of the refs")
    d.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    d.set_defaults(action=_diff)


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        if not getattr(args, "agent", None):
            raise UsageError("--agent A is required")
        return int(args.action(args, out))
    except UsageError as error:
        print(f"stratus releases: {error}", file=sys.stderr)
        return 2

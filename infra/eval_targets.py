"""Where ``stratus eval`` runs the cases: the targets and the judge's runtime.

- in process (default): a ``stratus.composition.Runtime`` on in-process moto with
  the stack's tables and the eval tenant's orders, against the offline fake model
  (started here) or the OpenAI-compatible endpoint of ``OPENAI_API_KEY`` /
  ``OPENAI_BASE_URL``;
- ``--api``: a running local cloud (or any Stratus API) over HTTP;
- ``--stack NAME``: a deployed stage's API (``ApiUrl`` output of its CloudFormation
  stack) with ``--key`` or ``STRATUS_API_KEY``;
- ``--version V`` (with ``--stack``, or ``--function NAME``): one published version of
  the agent's function, through Lambda ``Invoke`` with ``Qualifier=V``.

The LLM judge always runs in this process, on its own in-process runtime when the
cases run elsewhere (its gateway's budgets and ledger are this process's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import patch

from stratus.evals.target import EVAL_TENANT

OFFLINE_KEY = "sk-eval-offline"
API_KEY_ENV = "STRATUS_API_KEY"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
}
_AWS_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB")
#: Services the eval process calls for real while the judge's runtime runs on moto.
_REMOTE_SERVICES = ["lambda", "cloudformation", "cloudwatch", "sts"]
#: The orders the ``order_status`` suites look up (the eval tenant's, like the demo's).
EVAL_ORDERS: tuple[dict[str, Any], ...] = (
    {
        "order_id": "A-1001",
        "status": "in_transit",
        "carrier": "DHL",
        "eta": "2026-11-24",
        "items": ["running shoes"],
    },
    {
        "order_id": "A-1002",
        "status": "delivered",
        "carrier": "UPS",
        "eta": "2026-11-18",
        "items": ["rain jacket", "socks"],
    },
)

#: An order of another tenant: the suites check that the eval tenant never sees it.
OTHER_TENANT = "eval-other-tenant"
OTHER_TENANT_ORDER = {
    "order_id": "C-3003",
    "status": "in_transit",
    "carrier": "FedEx",
    "eta": "2026-12-02",
    "items": ["espresso machine"],
}


class UsageError(Exception):
    """Exit code 2: a suite file or an option cannot be used."""


def model_endpoint() -> tuple[str | None, str | None]:
    """(base URL, key) of a real endpoint from the environment, or (None, None): offline."""
    url = os.environ.get("STRATUS_OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    key = os.environ.get("STRATUS_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if not url and not key:
        return None, None
    return url or None, key or OFFLINE_KEY


@contextlib.contextmanager
def in_process_runtime(*, remote: bool = False) -> Iterator[tuple[Any, bool]]:
    """(runtime, offline): a Runtime on in-process moto and the model endpoint.

    ``remote``: the cases run elsewhere (Lambda, CloudFormation, CloudWatch are real
    calls the eval process makes with clients created before this); moto lets them
    through and only serves the runtime's own tables.
    """
    import boto3
    from moto import mock_aws

    from infra.definitions import TABLES, create_table_kwargs
    from infra.local import moto_atomic
    from infra.local.fake_model import FakeModelServer
    from stratus.aws import AwsClients
    from stratus.composition import Runtime
    from stratus.config import Settings

    url, key = model_endpoint()
    offline = url is None and key is None
    passthrough = _REMOTE_SERVICES if remote else []
    config: Any = {
        "core": {
            "mock_credentials": True,
            "passthrough": {"urls": [], "services": passthrough},
            "reset_boto3_session": True,
        }
    }
    with contextlib.ExitStack() as stack:
        if offline:
            url = stack.enter_context(FakeModelServer(quiet=True)).url
            key = OFFLINE_KEY
        stack.enter_context(patch.dict(os.environ, _AWS_ENV))
        for name in _AWS_UNSET:
            os.environ.pop(name, None)  # patch.dict restores them on exit
        stack.enter_context(mock_aws(config=config))
        moto_atomic.install()
        stack.callback(moto_atomic.uninstall)
        dynamodb = boto3.client("dynamodb")
        names = {t.name: f"stratus-eval-{t.name}" for t in TABLES}
        for table in TABLES:
            dynamodb.create_table(**create_table_kwargs(table, names[table.name]))
        tables = {t.env_var.removeprefix("STRATUS_").lower(): names[t.name] for t in TABLES}
        fields: dict[str, Any] = {
            "stage": "eval",
            "openai_api_key": key or OFFLINE_KEY,
            "openai_base_url": url,
            "model_secret_name": "",
            **tables,
            **_memory_store(stack),
        }
        settings = Settings(**fields)
        clients = AwsClients()
        orders = clients.table(settings.orders_table)
        for order in EVAL_ORDERS:
            orders.put({"tenant_id": EVAL_TENANT, **order})
        orders.put({"tenant_id": OTHER_TENANT, **OTHER_TENANT_ORDER})
        yield Runtime(settings, clients=clients), offline


def _memory_store(stack: contextlib.ExitStack) -> dict[str, Any]:
    """The dev stage's memory bucket and index in this process's moto, with the local
    ``QueryVectors``: agents with memory recall and extract here as they do on a cloud,
    so their cases cost the same on every target. Settings fields, as the stack sets them."""
    import boto3

    from infra.config import load_stage
    from infra.local import moto_vectors
    from infra.local.provision import create_memory
    from infra.topology.memory import memory_env

    moto_vectors.install()
    stack.callback(moto_vectors.uninstall)
    stage = load_stage("dev")
    create_memory(cast(Any, SimpleNamespace(s3vectors=boto3.client("s3vectors"))), stage)
    return {k.removeprefix("STRATUS_").lower(): v for k, v in memory_env(stage).items()}


def judge_for(runtime: Any) -> Any:
    """The LLM judge on ``runtime``'s gateway, billed to the eval tenant as ``eval_judge``."""
    from stratus.evals.judge import Judge

    return Judge(runtime.gateway, runtime.prices, runtime.settings, tenant_id=EVAL_TENANT)


def _schemas(agents: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    from functions.agents import load_agent

    out: dict[str, dict[str, Any] | None] = {}
    for name in agents:
        schema = load_agent(name).output_schema
        out[name] = None if schema is None else schema.model_json_schema()
    return out


def in_process_target(agents: Sequence[str], runtime: Any) -> Any:
    from functions.agents import load_agent
    from stratus.evals.target import InProcessTarget

    return InProcessTarget(runtime, {name: load_agent(name) for name in agents})


def api_target(
    agents: Sequence[str], url: str | None, key: str | None, facts_file: Path, shown: str
) -> tuple[Any, bool]:
    """(target, offline): a running API; what is not given comes from ``.stratus/local.json``."""
    from functions.agents import load_agent
    from stratus.evals.api_target import ApiTarget, ApiUnreachable

    facts: dict[str, Any] = {}
    if not url or not key:
        try:
            facts = json.loads(facts_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise UsageError(
                f"--api: no local cloud is running ({shown} not found or "
                "unreadable); start one with `stratus dev`, or pass --api URL --key KEY"
            ) from None
    url = url or facts.get("api_url")
    key = key or facts.get("demo_tenant_key")
    if not url or not key:
        raise UsageError(f"--api: {shown} names no api_url / demo_tenant_key")
    # The facts say whether that cloud runs the fake model; for another API it is unknown.
    offline = bool(facts.get("fake_model")) and facts.get("api_url") == url
    try:
        target = ApiTarget(
            url,
            key,
            _schemas(agents),
            versions={name: load_agent(name).version for name in agents},
            fake_model=offline,
        )
        target.check_reachable()
    except ApiUnreachable as error:
        raise UsageError(f"--api: {error}; is the local cloud running (`stratus dev`)?") from None
    print(f"[eval] against the API at {url}", file=sys.stderr)
    return target, offline


def aws_session(region: str | None) -> Any:
    import boto3

    return boto3.session.Session(region_name=region)


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        raise UsageError(f"--stack {stack}: {error.response['Error'].get('Message')}") from None
    except BotoCoreError as error:
        raise UsageError(f"--stack {stack}: {error}") from None
    outputs = (stacks[0].get("Outputs") or []) if stacks else []
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


def stack_api_target(
    agents: Sequence[str], session: Any, stack: str, key: str | None
) -> tuple[Any, bool]:
    """(target, offline): the stage's API from its stack's ``ApiUrl`` output."""
    from stratus.evals.api_target import ApiTarget, ApiUnreachable

    key = key or os.environ.get(API_KEY_ENV)
    if not key:
        raise UsageError(
            f"--stack {stack}: no API key; pass --key KEY or set {API_KEY_ENV} "
            "(a tenant key of that stage; there is no default)"
        )
    url = stack_outputs(session.client("cloudformation"), stack).get("ApiUrl")
    if not url:
        raise UsageError(f"--stack {stack}: the stack has no ApiUrl output")
    try:
        target = ApiTarget(url, key, _schemas(agents))
        target.check_reachable()
    except ApiUnreachable as error:
        raise UsageError(f"--stack {stack}: {error}") from None
    print(f"[eval] against stack {stack} at {url}", file=sys.stderr)
    return target, False


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def stack_functions(session: Any, stack: str, agents: Sequence[str]) -> dict[str, str]:
    """Agent -> the physical name of its API function in ``stack``.

    An output ``AgentFunction<Pascal>`` wins when the stack has one; otherwise the
    function whose logical id is CDK's ``...Agent<Pascal>Function<hash>``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    cloudformation = session.client("cloudformation")
    outputs = stack_outputs(cloudformation, stack)
    found: dict[str, str] = {}
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
        resources = [r for page in pages for r in page["StackResourceSummaries"]]
    except (ClientError, BotoCoreError) as error:
        raise UsageError(f"--stack {stack}: {error}") from None
    for agent in agents:
        named = outputs.get(f"AgentFunction{_pascal(agent)}")
        if named:
            found[agent] = named
            continue
        pattern = re.compile(rf"Agent{_pascal(agent)}Function[0-9A-F]{{8}}$")
        for resource in resources:
            if resource["ResourceType"] == "AWS::Lambda::Function" and pattern.search(
                resource["LogicalResourceId"]
            ):
                found[agent] = resource["PhysicalResourceId"]
                break
        else:
            raise UsageError(f"--stack {stack}: no function of agent {agent} found in the stack")
    return found


def version_target(
    agents: Sequence[str],
    session: Any,
    version: str,
    *,
    stack: str | None,
    function: str | None,
    tenant: str,
) -> tuple[Any, bool]:
    """(target, offline): one published version of each agent's function (Lambda Invoke)."""
    from stratus.evals.lambda_target import LambdaVersionTarget

    if function is not None:
        if len(agents) != 1:
            raise UsageError(
                f"--function names one function: choose one agent with --agent "
                f"(this run has {', '.join(agents)})"
            )
        functions = {agents[0]: function}
    elif stack is not None:
        functions = stack_functions(session, stack, agents)
    else:
        raise UsageError("--version needs --stack NAME or --function NAME")
    target = LambdaVersionTarget(
        session.client("lambda"), functions, version, _schemas(agents), tenant_id=tenant
    )
    where = ", ".join(f"{name}:{version}" for name in functions.values())
    print(f"[eval] against function version(s) {where}", file=sys.stderr)
    return target, False

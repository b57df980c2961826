"""The embedded local cloud: the whole Stratus app on one machine, no AWS, no Docker.

Pieces, all on loopback:

* **moto** in server mode, behind **the AWS front** (``infra.local.aws_front``),
  whose URL is the AWS endpoint for everything: boto3 in the handlers, producers,
  ``aws --endpoint-url``, and moto's own Step Functions interpreter (it calls
  Lambda at ``localhost:$MOTO_PORT``, so ``MOTO_PORT`` names the front).
* **the Lambda runtime** (``infra.local.lambda_runtime``): every function of the
  stack, with the environment the CDK stack gives it, in warm worker processes.
* **the API Gateway** (``infra.local.gateway``): the stack's routes and authorizer.
* **SQS pollers** (``infra.local.sqs_poller``) for every event source mapping.
* **the model**: the real endpoint when ``OPENAI_API_KEY`` is set, otherwise the
  offline fake model server, which says so.

Resources come from the same definitions as the CDK stack (``infra.definitions``,
``infra.topology``), so local and deployed cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import socket
import sys
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config

from infra.config import StageConfig, load_stage
from infra.definitions import TABLES, create_table_kwargs, ttl_kwargs
from infra.local import moto_atomic
from infra.local.aws_front import AwsFront
from infra.local.fake_model import FakeModelServer
from infra.local.gateway import LocalApiGateway
from infra.local.lambda_runtime import FunctionConfig, InvokeResult, LambdaRuntime
from infra.local.sqs_poller import EventSourceMapping, SqsPoller
from infra.paths import REPO_ROOT
from infra.topology import (
    FunctionPlan,
    JobResources,
    QueuePlan,
    api_routes,
    function_plans,
    queue_plans,
    workflow_plans,
)
from stratus.agents import AgentSpec
from stratus.tenants import TenantStore

log = logging.getLogger("stratus.local")

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
DEFAULT_API_PORT = 8780
DEFAULT_AWS_PORT = 8781
FAKE_KEY = "sk-local-fake-model"
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class QueueSpec:
    """A queue with its DLQ and redrive policy, and optionally the function it feeds."""

    name: str
    visibility_timeout_s: int = 30
    max_receive_count: int = 3
    function: str | None = None  # a function key (plan key or extra function name)
    batch_size: int = 10
    maximum_batching_window_s: float = 0.0
    report_batch_item_failures: bool = True


@dataclass(frozen=True)
class StateMachineSpec:
    """A state machine from an ASL definition; ``${Function:<key>}`` becomes that ARN."""

    name: str
    definition: str
    type: Literal["STANDARD", "EXPRESS"] = "STANDARD"


@dataclass
class Extras:
    """Functions, queues and state machines beyond the app's own (used by tests)."""

    functions: list[FunctionConfig] = field(default_factory=list)
    queues: list[QueueSpec] = field(default_factory=list)
    state_machines: list[StateMachineSpec] = field(default_factory=list)
    #: Function plan key -> another handler for it (tests wrap a real handler this way).
    handler_overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class LocalFacts:
    """What scripts and tests need to reach a running local cloud (``.stratus/local.json``)."""

    api_url: str
    aws_endpoint_url: str
    region: str
    demo_tenant_key: str
    demo_tenant_id: str
    model_base_url: str
    fake_model: bool
    tables: dict[str, str]
    queue_urls: dict[str, str]
    state_machine_arns: dict[str, str]
    functions: dict[str, str]
    jobs_topic_arn: str = ""
    callback_secret_arn: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


class LocalCloud:
    """Starts and stops everything; ``facts`` says where it all is."""

    def __init__(
        self,
        *,
        stage: StageConfig | None = None,
        specs: Mapping[str, AgentSpec] | None = None,
        api_port: int = DEFAULT_API_PORT,
        aws_port: int = DEFAULT_AWS_PORT,
        state_file: Path | None = REPO_ROOT / ".stratus" / "local.json",
        extras: Extras | None = None,
        log_sink: Callable[[str], None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        from functions.agents import load_all

        self.stage = stage or load_stage("dev")
        self.specs = dict(specs) if specs is not None else load_all()
        self._api_port = api_port
        self._aws_port = aws_port
        self._state_file = state_file
        self._extras = extras or Extras()
        self._log_sink = log_sink
        self._environ = dict(os.environ if environ is None else environ)
        self._stack: list[Callable[[], None]] = []
        self._previous_moto_port: str | None = None
        self.facts: LocalFacts | None = None
        self.runtime: LambdaRuntime | None = None
        self.fake_model: FakeModelServer | None = None
        #: Pollers of the stack's queues, by queue logical name.
        self.pollers: dict[str, SqsPoller] = {}
        #: The rendered definition of each agent's workflow (what moto executes).
        self.workflow_definitions: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCloud:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        with self._lock:
            while self._stack:
                undo = self._stack.pop()
                try:
                    undo()
                except Exception:  # keep stopping the rest
                    log.exception("error while stopping the local cloud")

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        # DynamoDB makes each request atomic; moto's threaded server does not
        # (concurrent conditional writes could both pass). Budgets and session
        # locks rely on it, so the local cloud restores DynamoDB's guarantee.
        moto_atomic.install()
        moto_port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        self._stack.append(moto.stop)
        # moto keeps its state in process-wide backends: clear them before stopping so
        # a later local cloud (or moto mock) in this process starts empty.
        self._stack.append(lambda: self._moto_api(moto_port, "reset", {}))
        self._moto_api(moto_port, "config", {"stepfunctions": {"execute_state_machine": True}})

        names = self._function_names()
        front = AwsFront(
            moto_port, self._invoke, known=lambda n: n in set(names.values()), port=self._aws_port
        )
        front.start()
        self._stack.append(front.stop)
        # moto's Step Functions interpreter calls Lambda at localhost:$MOTO_PORT.
        self._previous_moto_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = str(front.port)
        self._stack.append(self._restore_moto_port)
        aws_url = front.url

        model_url, model_key, fake = self._model()
        clients = _Clients(aws_url)
        tables = self._create_tables(clients)
        secret_arn = clients.secretsmanager.create_secret(
            Name=f"stratus/{self.stage.name}/model-keys",
            SecretString=json.dumps({"api_keys": [model_key]}),
        )["ARN"]

        callback_secret_arn = clients.secretsmanager.create_secret(
            Name=f"stratus/{self.stage.name}/callback-signing-key",
            SecretString=json.dumps({"key": secrets.token_urlsafe(32)}),
        )["ARN"]
        topic_arn = clients.sns.create_topic(Name=f"stratus-{self.stage.name}-job-events")[
            "TopicArn"
        ]
        app_queues = queue_plans(self.stage, self.specs)
        queue_urls = self._create_app_queues(clients, app_queues)
        workflow_arns = self._create_workflows(clients, names)
        jobs = JobResources(
            queue_urls=dict(queue_urls),
            topic_arn=topic_arn,
            workflow_arns=workflow_arns,
            callback_secret_id=callback_secret_arn,
        )

        functions = self._function_configs(names, tables, secret_arn, model_url, jobs)
        runtime = LambdaRuntime(
            functions, base_env=self._base_env(aws_url), log_sink=self._log_sink, cwd=REPO_ROOT
        )
        self.runtime = runtime
        self._stack.append(runtime.stop)

        for plan in app_queues:
            self._poll(clients, queue_urls[plan.name], names[plan.consumer], plan)
        queue_urls.update(self._create_queues(clients, names))
        machine_arns = {
            plan.agent: workflow_arns[plan.agent] for plan in workflow_plans(self.specs)
        }
        machine_arns.update(self._create_state_machines(clients, names))

        gateway = LocalApiGateway(
            api_routes(self.specs),
            {key: name for key, name in names.items()},
            self._invoke,
            authorizer=names["authorizer"],
            stage=self.stage.name,
            port=self._api_port,
        )
        gateway.start()
        self._stack.append(gateway.stop)

        tenant, key = TenantStore(tables["tenants"], clients.dynamodb).create("demo")
        self._seed_orders(clients, tables, tenant.tenant_id)

        self.facts = LocalFacts(
            api_url=gateway.url,
            aws_endpoint_url=aws_url,
            region=REGION,
            demo_tenant_key=key,
            demo_tenant_id=tenant.tenant_id,
            model_base_url=model_url,
            fake_model=fake,
            tables=tables,
            queue_urls=queue_urls,
            state_machine_arns=machine_arns,
            functions=dict(names),
            jobs_topic_arn=topic_arn,
            callback_secret_arn=callback_secret_arn,
        )
        self._write_state()

    # -- pieces -------------------------------------------------------------------------

    @staticmethod
    def _moto_api(port: int, action: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/moto-api/{action}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            response.read()

    def _restore_moto_port(self) -> None:
        if self._previous_moto_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self._previous_moto_port

    def _model(self) -> tuple[str, str, bool]:
        """(base URL, API key, is fake): a real endpoint if a key is configured."""
        key = self._environ.get("OPENAI_API_KEY", "")
        if key:
            base = self._environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
            return base, key, False
        server = FakeModelServer(quiet=True).start()
        self.fake_model = server
        self._stack.append(server.stop)
        return server.url, FAKE_KEY, True

    def _function_names(self) -> dict[str, str]:
        names = {
            plan.key: f"stratus-{self.stage.name}-{plan.key.replace(':', '-')}"
            for plan in function_plans(self.stage, self.specs)
        }
        names.update({f.name: f.name for f in self._extras.functions})
        return names

    def _base_env(self, aws_url: str) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
        env = {k: v for k, v in self._environ.items() if k in keep}
        env.update(LOCAL_CREDENTIALS)
        env.update(
            {
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": aws_url,
                # No X-Ray daemon here; the SDK would log an error per segment.
                "POWERTOOLS_TRACE_DISABLED": "true",
                "AWS_XRAY_SDK_ENABLED": "false",
                # Callbacks go to receivers on this machine (deployed: public URLs only).
                "STRATUS_CALLBACK_ALLOW_PRIVATE": "true",
            }
        )
        return env

    def _function_configs(
        self,
        names: Mapping[str, str],
        tables: Mapping[str, str],
        secret_arn: str,
        model_url: str,
        jobs: JobResources,
    ) -> list[FunctionConfig]:
        configs = []
        for plan in function_plans(self.stage, self.specs):
            env = plan.environment(table_names=tables, model_secret_id=secret_arn, jobs=jobs)
            env["OPENAI_BASE_URL"] = model_url
            config = _config(plan, names[plan.key], env)
            override = self._extras.handler_overrides.get(plan.key)
            if override:
                config = dataclasses.replace(config, handler=override)
            configs.append(config)
        configs.extend(self._extras.functions)
        return configs

    def _create_app_queues(self, clients: _Clients, plans: list[QueuePlan]) -> dict[str, str]:
        """The stack's queues and DLQs (``infra.topology.queue_plans``), by logical name."""
        urls: dict[str, str] = {}
        for plan in plans:
            physical = f"stratus-{self.stage.name}-{plan.name}"
            dlq_url = clients.sqs.create_queue(
                QueueName=f"{physical}-dlq",
                Attributes={"MessageRetentionPeriod": str(plan.dlq_retention_s)},
            )["QueueUrl"]
            dlq_arn = clients.sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            urls[plan.name] = clients.sqs.create_queue(
                QueueName=physical,
                Attributes={
                    "VisibilityTimeout": str(plan.visibility_timeout_s),
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": plan.max_receive_count}
                    ),
                },
            )["QueueUrl"]
            urls[plan.dlq_name] = dlq_url
        return urls

    def _poll(self, clients: _Clients, url: str, function_name: str, plan: QueuePlan) -> None:
        arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        mapping = EventSourceMapping(
            function_name=function_name,
            queue_url=url,
            queue_arn=arn,
            batch_size=plan.batch_size,
            maximum_batching_window_s=float(plan.batching_window_s),
            report_batch_item_failures=plan.report_batch_item_failures,
        )
        poller = SqsPoller(mapping, self._invoke, sqs_client=clients.sqs, region=REGION)
        poller.start()
        self.pollers[plan.name] = poller
        self._stack.append(poller.stop)

    def _create_workflows(self, clients: _Clients, names: Mapping[str, str]) -> dict[str, str]:
        """The agents' state machines from the same ASL files and variables as the stack."""
        arns: dict[str, str] = {}
        function_arns = {key: _function_arn(name) for key, name in names.items()}
        for plan in workflow_plans(self.specs):
            arns[plan.agent] = clients.stepfunctions.create_state_machine(
                name=plan.state_machine_name(self.stage),
                definition=plan.render(function_arns),
                type="STANDARD",
                roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/stratus-local-states",
            )["stateMachineArn"]
            self.workflow_definitions[plan.agent] = plan.render(function_arns)
        return arns

    def _create_tables(self, clients: _Clients) -> dict[str, str]:
        names = {}
        for table in TABLES:
            name = f"stratus-{self.stage.name}-{table.name}"
            clients.dynamodb.create_table(**create_table_kwargs(table, name))
            ttl = ttl_kwargs(table, name)
            if ttl:
                clients.dynamodb.update_time_to_live(**ttl)
            names[table.name] = name
        return names

    def _create_queues(self, clients: _Clients, names: Mapping[str, str]) -> dict[str, str]:
        urls: dict[str, str] = {}
        for queue in self._extras.queues:
            dlq_url = clients.sqs.create_queue(QueueName=f"{queue.name}-dlq")["QueueUrl"]
            dlq_arn = clients.sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            url = clients.sqs.create_queue(
                QueueName=queue.name,
                Attributes={
                    "VisibilityTimeout": str(queue.visibility_timeout_s),
                    "RedrivePolicy": json.dumps(
                        {
                            "deadLetterTargetArn": dlq_arn,
                            "maxReceiveCount": str(queue.max_receive_count),
                        }
                    ),
                },
            )["QueueUrl"]
            urls[queue.name] = url
            urls[f"{queue.name}-dlq"] = dlq_url
            if queue.function is None:
                continue
            arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            mapping = EventSourceMapping(
                function_name=names[queue.function],
                queue_url=url,
                queue_arn=arn,
                batch_size=queue.batch_size,
                maximum_batching_window_s=queue.maximum_batching_window_s,
                report_batch_item_failures=queue.report_batch_item_failures,
            )
            poller = SqsPoller(mapping, self._invoke, sqs_client=clients.sqs, region=REGION)
            poller.start()
            self._stack.append(poller.stop)
        return urls

    def _create_state_machines(self, clients: _Clients, names: Mapping[str, str]) -> dict[str, str]:
        arns = {}
        for machine in self._extras.state_machines:
            definition = machine.definition
            for key, name in names.items():
                definition = definition.replace(
                    "${Function:" + key + "}",
                    f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
                )
            arns[machine.name] = clients.stepfunctions.create_state_machine(
                name=machine.name,
                definition=definition,
                type=machine.type,
                roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/stratus-local-states",
            )["stateMachineArn"]
        return arns

    def _seed_orders(self, clients: _Clients, tables: Mapping[str, str], tenant_id: str) -> None:
        orders = [
            ("A-1001", "in_transit", "DHL", "2026-11-24", ["running shoes"]),
            ("A-1002", "delivered", "UPS", "2026-11-18", ["rain jacket", "socks"]),
        ]
        for order_id, status, carrier, eta, items in orders:
            clients.dynamodb.put_item(
                TableName=tables["orders"],
                Item={
                    "tenant_id": {"S": tenant_id},
                    "order_id": {"S": order_id},
                    "status": {"S": status},
                    "carrier": {"S": carrier},
                    "eta": {"S": eta},
                    "items": {"L": [{"S": item} for item in items]},
                },
            )

    def _invoke(self, name: str, event: Any) -> InvokeResult:
        if self.runtime is None:
            raise RuntimeError("the local cloud is not running")
        return self.runtime.invoke(name, event)

    def _write_state(self) -> None:
        if self._state_file is None or self.facts is None:
            return
        path = self._state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.facts.to_json() + "\n", encoding="utf-8")
        self._stack.append(lambda: path.unlink(missing_ok=True))


def _function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


def _config(plan: FunctionPlan, name: str, env: dict[str, str]) -> FunctionConfig:
    return FunctionConfig(
        name=name,
        handler=plan.handler,
        environment=env,
        timeout_s=float(plan.timeout_s),
        memory_mb=plan.memory_mb,
        max_concurrency=plan.reserved_concurrency or 4,
    )


class _Clients:
    """boto3 clients of this process pointed at the local AWS endpoint."""

    def __init__(self, endpoint: str) -> None:
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=REGION,
        )
        config = Config(retries={"mode": "standard", "max_attempts": 3})
        self.dynamodb = session.client("dynamodb", endpoint_url=endpoint, config=config)
        self.sqs = session.client("sqs", endpoint_url=endpoint, config=config)
        self.secretsmanager = session.client("secretsmanager", endpoint_url=endpoint, config=config)
        self.stepfunctions = session.client("stepfunctions", endpoint_url=endpoint, config=config)
        self.sns = session.client("sns", endpoint_url=endpoint, config=config)


def print_banner(facts: LocalFacts, out: Any = sys.stdout) -> None:
    key = facts.demo_tenant_key
    producer_sample = json.dumps(
        {"version": "1", "tenant_id": facts.demo_tenant_id, "agent": "triage", "input": "Hi"}
    )
    lines = [
        "",
        "Stratus local cloud is running (Ctrl-C stops it).",
        f"  API:               {facts.api_url}",
        f"  AWS endpoint:      {facts.aws_endpoint_url}   (region {facts.region})",
        f"  Demo tenant key:   {key}",
        f"  Model:             {facts.model_base_url}",
    ]
    if facts.fake_model:
        lines.append(
            "  !! Replies come from the OFFLINE FAKE MODEL, not a real model. Set "
            "OPENAI_API_KEY (and OPENAI_BASE_URL) for a real one."
        )
    for name, url in sorted(facts.queue_urls.items()):
        lines.append(f"  Queue {name}: {url}")
    for name, arn in sorted(facts.state_machine_arns.items()):
        lines.append(f"  State machine {name}: {arn}")
    lines += [
        "",
        "Try:",
        f"  curl -s {facts.api_url}/v1/health",
        f"  curl -s {facts.api_url}/v1/agents/triage/invoke -H 'Authorization: Bearer {key}' \\",
        "       -H 'Content-Type: application/json' "
        '-d \'{"input": "Where is my order A-1001?"}\'',
        f"  curl -s {facts.api_url}/v1/agents/order_status/invoke "
        f"-H 'Authorization: Bearer {key}' \\",
        "       -H 'Content-Type: application/json' -d '{\"input\": \"Where is order A-1001?\"}'",
        f"  aws --endpoint-url {facts.aws_endpoint_url} dynamodb list-tables",
        "",
        "Jobs:",
        f"  curl -s {facts.api_url}/v1/jobs -H 'Authorization: Bearer {key}' \\",
        "       -H 'Content-Type: application/json' "
        '-d \'{"agent": "researcher", "input": "Which carrier is fastest?"}\'',
        f"  curl -s {facts.api_url}/v1/jobs/<job_id> -H 'Authorization: Bearer {key}'",
        f"  aws --endpoint-url {facts.aws_endpoint_url} sqs send-message "
        f"--queue-url {facts.queue_urls.get('ingest', '<ingest>')} \\",
        f"       --message-body '{producer_sample}'",
        f"  AWS_ENDPOINT_URL={facts.aws_endpoint_url} .venv/bin/stratus dlq list "
        f"--queue {facts.queue_urls.get('ingest-dlq', '<ingest-dlq>')}",
        f"  Job events topic: {facts.jobs_topic_arn}",
        "",
    ]
    print("\n".join(lines), file=out, flush=True)


def load_facts(path: Path = REPO_ROOT / ".stratus" / "local.json") -> dict[str, Any]:
    """The facts of a running local cloud, for scripts and tests."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


__all__ = [
    "Extras",
    "LocalCloud",
    "LocalFacts",
    "QueueSpec",
    "StateMachineSpec",
    "free_port",
    "load_facts",
    "print_banner",
]

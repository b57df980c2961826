"""The embedded local cloud: the whole Stratus app on one machine, no AWS, no Docker.

Pieces, all on loopback:

* **moto** in server mode, in a process of its own (``infra.local.moto_process``),
  behind **the AWS front** (``infra.local.aws_front``), whose URL is the AWS
  endpoint for everything: producers, ``aws --endpoint-url``, and moto's own Step
  Functions interpreter (it calls Lambda at ``localhost:$MOTO_PORT``, so
  ``MOTO_PORT`` names the front). The functions and the cloud's own pollers reach
  every service but Lambda on moto directly (one hop instead of two).
* **the Lambda runtime** (``infra.local.lambda_runtime``): every function of the
  stack, with the environment the CDK stack gives it, in warm worker processes.
* **the API Gateway** (``infra.local.gateway``): the stack's routes and authorizer.
* **SQS pollers** (``infra.local.sqs_poller``) for every event source mapping.
* **the lease sweep schedule**: a thread that invokes the sweeper function every
  ``sweep_interval_s`` (the stack's EventBridge rule; ``STRATUS_LOCAL_SWEEP_INTERVAL_S``,
  0 turns it off); :meth:`LocalCloud.sweep` runs one sweep now (tests).
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
import threading
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infra.config import StageConfig, load_stage
from infra.local.aws_front import AwsFront
from infra.local.canary_control import CanaryControl
from infra.local.console import ConsoleServer
from infra.local.facts import (
    ACCOUNT_ID,
    DEFAULT_API_PORT,
    DEFAULT_AWS_PORT,
    DEFAULT_CONSOLE_PORT,
    FAKE_KEY,
    LOCAL_CREDENTIALS,
    REGION,
    Extras,
    LocalFacts,
    QueueSpec,
    StateMachineSpec,
    free_port,
    load_facts,
    print_banner,
)
from infra.local.fake_model import FakeModelServer
from infra.local.gateway import LocalApiGateway
from infra.local.lambda_runtime import FunctionConfig, InvokeResult, LambdaRuntime
from infra.local.log_buffer import LogBuffer
from infra.local.moto_process import MotoProcess
from infra.local.provision import (
    LocalClients,
    create_app_queues,
    create_extra_queues,
    create_flags,
    create_memory,
    create_signing_key,
    create_state_machines,
    create_tables,
    create_workflows,
    function_config,
    seed_orders,
)
from infra.local.sqs_poller import EventSourceMapping, SqsPoller
from infra.local.websocket_gateway import DEFAULT_WS_PORT, LocalWebSocketGateway
from infra.paths import REPO_ROOT
from infra.topology import (
    SWEEP_INTERVAL_S,
    JobResources,
    QueuePlan,
    api_routes,
    function_plans,
    queue_plans,
    workflow_plans,
)
from infra.topology.flags import FLAGS_MAX_AGE_ENV
from infra.topology.streaming import STREAM_AUTHORIZER_KEY, STREAM_KEY, StreamResources
from stratus.agents import AgentSpec
from stratus.tenants import TenantStore

log = logging.getLogger("stratus.local")


#: Batches each SQS mapping keeps in flight (Lambda's mapping starts with five pollers).
MAPPING_POLLERS = 5
#: boto3 service ids (``AWS_ENDPOINT_URL_<ID>``) the functions reach on moto directly.
DIRECT_SERVICES: tuple[str, ...] = ("DYNAMODB", "SQS", "SNS", "SECRETS_MANAGER", "SFN")
DIRECT_SERVICES += ("CLOUDWATCH", "S3", "S3VECTORS")  # S3 Vectors: infra.local.moto_vectors
DIRECT_SERVICES += ("APPCONFIG", "APPCONFIGDATA")  # AppConfigData: infra.local.moto_appconfig
#: How long a local function keeps the flags document (``STRATUS_FLAGS_MAX_AGE_S``): a
#: ``stratus flags set`` applies within seconds here (``STRATUS_LOCAL_FLAGS_MAX_AGE_S``).
LOCAL_FLAGS_MAX_AGE_S = 5


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
        sweep_interval_s: float | None = None,
        function_env: Mapping[str, str] | None = None,
        ws_port: int | None = None,
        console_port: int | None = None,
    ) -> None:
        from functions.agents import load_all

        self.stage = stage or load_stage("dev")
        self.specs = dict(specs) if specs is not None else load_all()
        self._api_port = api_port
        self._aws_port = aws_port
        #: The WebSocket API's port: None is 8782, or a free one when ``api_port`` is 0.
        self._ws_port = ws_port if ws_port is not None else (DEFAULT_WS_PORT if api_port else 0)
        #: The console's port: None is 8783, or a free one when ``api_port`` is 0.
        self._console_port = (
            console_port if console_port is not None else (DEFAULT_CONSOLE_PORT if api_port else 0)
        )
        self._state_file = state_file
        self._extras = extras or Extras()
        self._log_sink = log_sink
        self._environ = dict(os.environ if environ is None else environ)
        if sweep_interval_s is None:
            raw = self._environ.get("STRATUS_LOCAL_SWEEP_INTERVAL_S", "")
            sweep_interval_s = float(raw) if raw else float(SWEEP_INTERVAL_S)
        #: Seconds between two scheduled lease sweeps (0: only :meth:`sweep`).
        self.sweep_interval_s = sweep_interval_s
        self._sweeps = threading.Event()
        #: Variables every function gets besides its plan's (tests: shorter sweep grace,
        #: retry backoff); the plan's own values win.
        self._function_env = dict(function_env or {})
        self._stack: list[Callable[[], None]] = []
        self.facts: LocalFacts | None = None
        self.runtime: LambdaRuntime | None = None
        self.fake_model: FakeModelServer | None = None
        #: The memory index (S3 Vectors) the functions use, once started.
        self.memory_index_arn: str | None = None
        #: The feature flags' names and moto ids (``LocalFacts.flags``), once started.
        self.flags: dict[str, str] = {}
        #: Pollers of the stack's queues, by queue logical name.
        self.pollers: dict[str, SqsPoller] = {}
        self._all_pollers: list[SqsPoller] = []  # the stack's and the extra queues'
        #: The rendered definition of each agent's workflow (what moto executes).
        self.workflow_definitions: dict[str, str] = {}
        #: The canary control API (``/_stratus/canary`` on the AWS front), once started.
        self.canary: CanaryControl | None = None
        #: The functions' recent log lines (the console reads them) and the console.
        self.logs = LogBuffer()
        self.console: ConsoleServer | None = None
        #: The WebSocket API (streamed replies), once started.
        self.websocket: LocalWebSocketGateway | None = None
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
            # Every poller finishes its long poll at the same time, not one after another.
            for poller in self._all_pollers:
                poller.request_stop()
            while self._stack:
                undo = self._stack.pop()
                try:
                    undo()
                except Exception:  # keep stopping the rest
                    log.exception("error while stopping the local cloud")
            self._all_pollers.clear()

    def _start(self) -> None:
        names = self._function_names()
        # The front first: moto's Step Functions interpreter calls Lambda at
        # localhost:$MOTO_PORT, so moto's process is started knowing the front's port.
        front = AwsFront(
            0, self._invoke, known=lambda n: n in set(names.values()), port=self._aws_port
        )
        front.start()
        self._stack.append(front.stop)
        # moto in a process of its own (a core to itself), with DynamoDB's per-request
        # atomicity restored (``infra.local.moto_atomic``): budgets and session locks
        # rely on conditional writes that cannot both pass.
        moto = MotoProcess(lambda_port=front.port, cwd=REPO_ROOT, env=self._moto_env()).start()
        self._stack.append(moto.stop)
        front.moto_port = moto.port
        self._moto_api(moto.port, "config", {"stepfunctions": {"execute_state_machine": True}})
        aws_url = front.url
        moto_url = moto.url

        model_url, model_key, fake = self._model()
        clients = LocalClients(aws_url)
        # The cloud's own pollers talk to moto directly (no hop through the front).
        direct = LocalClients(moto_url)
        tables = create_tables(clients, self.stage)
        # Long-term memory: the stage's vector bucket and index (moto answers QueryVectors
        # with infra.local.moto_vectors, installed in its process).
        self.memory_index_arn = create_memory(clients, self.stage)
        # Feature flags: the AppConfig application, profile and default document (the
        # functions read them through infra.local.moto_appconfig's AppConfigData).
        self.flags = create_flags(clients, self.stage)
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
        queue_urls = create_app_queues(clients, self.stage, app_queues)
        workflow_arns, definitions = create_workflows(
            clients, self.stage, workflow_plans(self.specs), names
        )
        self.workflow_definitions.update(definitions)
        jobs = JobResources(
            queue_urls=dict(queue_urls),
            topic_arn=topic_arn,
            workflow_arns=workflow_arns,
            callback_secret_id=callback_secret_arn,
        )

        stream = StreamResources(
            callback_url=f"{aws_url}/@ws/{self.stage.name}",
            functions={a: names[f"agent:{a}"] for a in self.specs},
        )
        functions = self._function_configs(names, tables, secret_arn, model_url, jobs, stream)
        runtime = LambdaRuntime(
            functions,
            base_env=self._base_env(aws_url, moto_url),
            log_sink=self.logs.tee(self._log_sink),
            cwd=REPO_ROOT,
        )
        self.runtime = runtime
        self._stack.append(runtime.stop)
        # ``stratus canary`` / ``stratus rollback``: candidate versions added at runtime.
        self.canary = CanaryControl(runtime, names)
        front.control = self.canary

        for plan in app_queues:
            self._poll(direct, queue_urls[plan.name], names[plan.consumer], plan)
        queue_urls.update(self._create_queues(clients, names, direct))
        machine_arns = {
            plan.agent: workflow_arns[plan.agent] for plan in workflow_plans(self.specs)
        }
        machine_arns.update(create_state_machines(clients, self._extras.state_machines, names))

        self._schedule_sweeps()

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
        # The console reads ``self.facts`` when asked; started here so its URL is a fact.
        console = self.console = ConsoleServer(self, port=self._console_port).start()
        self._stack.append(console.stop)
        websocket = LocalWebSocketGateway(
            self._invoke,
            router=names[STREAM_KEY],
            authorizer=names[STREAM_AUTHORIZER_KEY],
            stage=self.stage.name,
            port=self._ws_port,
            throttle_rate=self.stage.api_throttle_rate,
            throttle_burst=self.stage.api_throttle_burst,
        ).start()
        self._stack.append(websocket.stop)
        front.connections = websocket.manage
        self.websocket = websocket

        tenant, key = TenantStore(tables["tenants"], clients.dynamodb).create("demo")
        seed_orders(clients, tables, tenant.tenant_id)
        demo_signing = create_signing_key(clients, tables, tenant.tenant_id)

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
            demo_callback_kid=demo_signing.kid,
            demo_callback_secret=demo_signing.secret,
            console_url=console.url,
            websocket_url=websocket.url,
            flags=dict(self.flags),
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

    def _moto_env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
        return {k: v for k, v in self._environ.items() if k in keep or k.startswith("MOTO_")}

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

    def _base_env(self, aws_url: str, moto_url: str) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
        env = {k: v for k, v in self._environ.items() if k in keep}
        env.update(LOCAL_CREDENTIALS)
        env.update(
            {
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": aws_url,
                # Only Lambda needs the front; every other service goes straight to moto
                # (boto3's per-service endpoint variables), one HTTP hop instead of two.
                **{f"AWS_ENDPOINT_URL_{service}": moto_url for service in DIRECT_SERVICES},
                # No X-Ray daemon here; the SDK would log an error per segment.
                "POWERTOOLS_TRACE_DISABLED": "true",
                "AWS_XRAY_SDK_ENABLED": "false",
                # Callbacks go to receivers on this machine (deployed: public URLs only).
                "STRATUS_CALLBACK_ALLOW_PRIVATE": "true",
            }
        )
        env.update(self._function_env)
        return env

    def _function_configs(
        self,
        names: Mapping[str, str],
        tables: Mapping[str, str],
        secret_arn: str,
        model_url: str,
        jobs: JobResources,
        stream: StreamResources,
    ) -> list[FunctionConfig]:
        configs = []
        for plan in function_plans(self.stage, self.specs):
            env = plan.environment(
                table_names=tables, model_secret_id=secret_arn, jobs=jobs, stream=stream
            )
            env["OPENAI_BASE_URL"] = model_url
            if FLAGS_MAX_AGE_ENV in env:  # a flag change applies within seconds locally
                env[FLAGS_MAX_AGE_ENV] = self._environ.get(
                    "STRATUS_LOCAL_FLAGS_MAX_AGE_S", str(LOCAL_FLAGS_MAX_AGE_S)
                )
            config = function_config(plan, names[plan.key], env)
            override = self._extras.handler_overrides.get(plan.key)
            if override:
                config = dataclasses.replace(config, handler=override)
            configs.append(config)
        configs.extend(self._extras.functions)
        return configs

    def _poll(self, clients: LocalClients, url: str, function_name: str, plan: QueuePlan) -> None:
        """An event source mapping of one of the stack's queues."""
        poller = self._start_poller(
            clients,
            EventSourceMapping(
                function_name=function_name,
                queue_url=url,
                queue_arn=clients.queue_arn(url),
                batch_size=plan.batch_size,
                maximum_batching_window_s=float(plan.batching_window_s),
                report_batch_item_failures=plan.report_batch_item_failures,
                maximum_concurrency=plan.max_concurrency,
            ),
        )
        self.pollers[plan.name] = poller

    def _create_queues(
        self, clients: LocalClients, names: Mapping[str, str], direct: LocalClients
    ) -> dict[str, str]:
        """The extra queues, and a poller for each one that feeds a function."""
        urls = create_extra_queues(clients, self._extras.queues)
        for queue in self._extras.queues:
            if queue.function is None:
                continue
            url = urls[queue.name]
            self._start_poller(
                direct,
                EventSourceMapping(
                    function_name=names[queue.function],
                    queue_url=url,
                    queue_arn=clients.queue_arn(url),
                    batch_size=queue.batch_size,
                    maximum_batching_window_s=queue.maximum_batching_window_s,
                    report_batch_item_failures=queue.report_batch_item_failures,
                ),
            )
        return urls

    def _start_poller(self, clients: LocalClients, mapping: EventSourceMapping) -> SqsPoller:
        poller = SqsPoller(
            mapping, self._invoke, sqs_client=clients.sqs, region=REGION, pollers=MAPPING_POLLERS
        )
        poller.start()
        self._all_pollers.append(poller)
        self._stack.append(poller.stop)
        return poller

    # -- the lease sweep (the stack's EventBridge schedule) ---------------------------

    def sweep(self) -> dict[str, Any]:
        """Run one lease sweep now, through the sweeper function; what it did."""
        result = self._invoke(
            self._function_names()["sweeper"],
            {"source": "stratus.local", "detail-type": "Scheduled Event", "detail": {}},
        )
        if not result.ok:
            raise RuntimeError(f"the lease sweep failed: {result.error}")
        return dict(result.payload or {})

    def _schedule_sweeps(self) -> None:
        if self.sweep_interval_s <= 0:
            return
        self._sweeps.clear()

        def loop() -> None:
            while not self._sweeps.wait(self.sweep_interval_s):
                try:
                    self.sweep()
                except Exception:  # keep the schedule going, as EventBridge does
                    log.exception("scheduled lease sweep failed")

        thread = threading.Thread(target=loop, name="stratus-lease-sweep", daemon=True)
        thread.start()

        def stop() -> None:
            self._sweeps.set()
            thread.join(5)

        self._stack.append(stop)

    def _invoke(self, name: str, event: Any, qualifier: str | None = None) -> InvokeResult:
        """Every caller's way in (gateway, pollers, the front): None goes through the alias."""
        if self.runtime is None:
            raise RuntimeError("the local cloud is not running")
        return self.runtime.invoke(name, event, qualifier=qualifier)

    def _write_state(self) -> None:
        if self._state_file is None or self.facts is None:
            return
        path = self._state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.facts.to_json() + "\n", encoding="utf-8")
        self._stack.append(lambda: path.unlink(missing_ok=True))


__all__ = [
    "ACCOUNT_ID",
    "DEFAULT_API_PORT",
    "DEFAULT_AWS_PORT",
    "FAKE_KEY",
    "LOCAL_CREDENTIALS",
    "REGION",
    "Extras",
    "FunctionConfig",
    "LocalCloud",
    "LocalFacts",
    "QueueSpec",
    "StateMachineSpec",
    "free_port",
    "load_facts",
    "print_banner",
]

"""Where a local cloud is and what it runs: ports, credentials, extras and its facts.

``LocalFacts`` is what scripts and tests read (``.stratus/local.json``) to reach
a running local cloud; ``print_banner`` shows them to a person.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from infra.local.lambda_types import FunctionConfig
from infra.paths import REPO_ROOT

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
DEFAULT_API_PORT = 8780
DEFAULT_AWS_PORT = 8781
#: The web console (``infra.local.console``); ``stratus dev --console-port``.
DEFAULT_CONSOLE_PORT = 8783
FAKE_KEY = "sk-local-fake-model"
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
}


def free_port() -> int:
    """A free TCP port on loopback (the OS picks it)."""
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
    #: The demo tenant's own callback signing key (kid and secret), for its receivers.
    demo_callback_kid: str = ""
    demo_callback_secret: str = ""
    #: The web console of this cloud (``infra.local.console``).
    console_url: str = ""
    #: The local WebSocket API (streamed replies, issue 17): ``ws://127.0.0.1:<port>``.
    websocket_url: str = ""
    #: The feature flags' AppConfig names and moto ids (issue 19): ``application``,
    #: ``environment``, ``profile``, ``application_id``, ``profile_id``.
    flags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def print_banner(facts: LocalFacts, out: Any = sys.stdout) -> None:
    """Where everything is, and commands to try, for a person at a terminal."""
    key = facts.demo_tenant_key
    producer_sample = json.dumps(
        {"version": "1", "tenant_id": facts.demo_tenant_id, "agent": "triage", "input": "Hi"}
    )
    lines = [
        "",
        "Stratus local cloud is running (Ctrl-C stops it).",
        f"  API:               {facts.api_url}",
        f"  WebSocket:         {facts.websocket_url}   (streamed replies, ?ticket=<ticket>)",
        f"  AWS endpoint:      {facts.aws_endpoint_url}   (region {facts.region})",
        f"  Demo tenant key:   {key}",
        f"  Model:             {facts.model_base_url}",
    ]
    if facts.console_url:
        lines.append(f"  Console:           {facts.console_url}")
    if facts.flags:
        flags = facts.flags
        lines.append(
            f"  Feature flags:     AppConfig {flags['application']}/{flags['profile']} "
            "(stratus flags list|get|set; applies within seconds)"
        )
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

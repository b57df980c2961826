"""The ports of the job domain (besides :class:`~stratus.jobs.store.JobStore`).

AWS adapters are in :mod:`stratus.jobs.aws_adapters`, the HTTP callback sender in
:mod:`stratus.jobs.notifications`, in-memory fakes in :mod:`stratus.jobs.memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from stratus.agents import ToolContext
from stratus.deadline import Deadline
from stratus.usage import Usage

#: ``(host, port) -> addresses`` the host resolves to (``socket.getaddrinfo`` by default).
Resolver = Callable[[str, int], list[str]]


class MessageQueue(Protocol):
    """Sends a message to a queue (the agents' job queues, the ingest DLQ)."""

    def send(self, queue_url: str, body: str, attributes: Mapping[str, str]) -> None: ...


class WorkflowEngine(Protocol):
    """Starts and stops executions and answers their task tokens."""

    def start(self, state_machine_arn: str, name: str, execution_input: str) -> str:
        """Start an execution named ``name``; its ARN (also if it already exists)."""
        ...

    def stop(self, execution_arn: str, *, error: str, cause: str) -> None: ...

    def send_task_success(self, task_token: str, output: str) -> None: ...

    def send_task_failure(self, task_token: str, *, error: str, cause: str) -> None: ...


class EventPublisher(Protocol):
    """Publishes one job event (the jobs topic)."""

    def publish(self, message: str, attributes: Mapping[str, str]) -> None: ...


class CallbackSender(Protocol):
    """POSTs a body to a URL without following redirects; raises ``OSError`` on failure."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> None: ...


class SecretSource(Protocol):
    def secret_string(self, secret_id: str) -> str: ...


class TenantCheck(Protocol):
    def is_active(self, tenant_id: str) -> bool: ...


class StepResult(Protocol):
    output: Any
    model: str
    usage: Usage
    cost_usd: Decimal


class StepRunner(Protocol):
    """Runs one model step of a job (an ``AgentRunner``)."""

    def run(
        self, user_input: Any, *, ctx: ToolContext, deadline: Deadline | None = None
    ) -> StepResult: ...

"""The ports of the job domain (besides :class:`~stratus.jobs.store.JobStore`).

AWS adapters are in :mod:`stratus.jobs.aws_adapters`, the HTTP callback sender in
:mod:`stratus.jobs.notifications`, in-memory fakes in :mod:`stratus.jobs.memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from stratus.agents import CallScope, ToolContext
from stratus.deadline import Deadline
from stratus.usage import Usage

#: ``(host, port) -> addresses`` the host resolves to (``socket.getaddrinfo`` by default).
Resolver = Callable[[str, int], list[str]]


class TaskBudgets(Protocol):
    """The budget ledger's side of a finished job (``stratus.budgets.BudgetLedger``)."""

    def close_task(self, scope: CallScope) -> object:
        """Give back what the job's dead attempts still hold on its per-task budget."""
        ...


class MessageQueue(Protocol):
    """Sends a message to a queue (the agents' job queues, the ingest DLQ, callbacks), and
    sets when a received message comes back (``ChangeMessageVisibility``: retry backoff)."""

    def send(self, queue_url: str, body: str, attributes: Mapping[str, str]) -> None: ...

    def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None: ...


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
    """POSTs a body to a checked destination (``stratus.jobs.callbacks.Destination``: the
    one address that was resolved and checked), never following redirects; the HTTP
    status, or ``OSError`` when there is none."""

    def post(self, dest: Any, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int: ...


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

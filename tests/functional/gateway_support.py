"""Helpers for the model gateway tests: a runner wired to moto and the fake model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.agents import load_agent
from infra.local import moto_atomic
from stratus.agents import AgentSpec, CallScope, ToolContext
from stratus.breaker import CircuitBreaker, Spawn
from stratus.budgets import BudgetLedger, from_nano
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.gateway import ModelGateway
from stratus.gateway_stores.dynamo import DynamoBreakerStore, DynamoBucketStore, DynamoBudgetStore
from stratus.gateway_stores.memory import MemoryAlerts
from stratus.prices import load_price_table
from stratus.ratelimit import KeyBuckets
from stratus.runner import AgentRunner
from stratus.tokens import estimate_prompt_tokens


@pytest.fixture
def atomic_moto() -> Iterator[None]:
    """DynamoDB's per-request atomicity, which moto lacks under threads (see moto_atomic)."""
    moto_atomic.install()
    yield
    moto_atomic.uninstall()


@dataclass
class Clock:
    now: float = field(default_factory=lambda: datetime.now(UTC).timestamp())

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    settings: Settings
    gateway: ModelGateway
    alerts: list[tuple[str, dict[str, Any]]]
    sleeps: list[float]
    clock: Clock
    runtime: Runtime

    def runner(self, agent: str | AgentSpec) -> AgentRunner:
        spec = load_agent(agent) if isinstance(agent, str) else agent
        return AgentRunner(spec, self.gateway, load_price_table(), self.settings)

    def run(
        self,
        agent: str | AgentSpec,
        text: str,
        *,
        tenant: str = "tenant-a",
        kind: str = "request",
        scope_id: str = "r-1",
        step: str = "main",
        replayable: bool = True,
    ) -> Any:
        runner = self.runner(agent)
        scope = CallScope(
            tenant_id=tenant,
            agent=runner.spec.name,
            kind=kind,  # type: ignore[arg-type]
            scope_id=scope_id,
            step=step,
            replayable=replayable,
        )
        ctx = ToolContext(
            tenant_id=tenant,
            agent=runner.spec.name,
            request_id=scope_id,
            settings=self.settings,
            scope=scope,
            clients=self.runtime.clients,
        )
        return runner.run(text, ctx=ctx)

    def budget_item(self, pk: str) -> dict[str, Any]:
        item = (
            boto3.resource("dynamodb")
            .Table(self.settings.budgets_table)
            .get_item(Key={"pk": pk}, ConsistentRead=True)
        )
        return dict(item.get("Item") or {})

    def spent(self, pk: str) -> Decimal:
        return from_nano(self.budget_item(pk).get("spent"))

    def committed(self, pk: str) -> Decimal:
        return from_nano(self.budget_item(pk).get("committed"))

    def reservation(self, agent: str, text: str) -> Decimal:
        """The worst case the gateway reserves for the first call of ``agent`` on ``text``."""
        spec = load_agent(agent)
        messages = [
            {"role": "system", "content": spec.system_prompt},
            {"role": "user", "content": text},
        ]
        runner = self.runner(spec)
        schema = spec.output_schema.model_json_schema() if spec.output_schema else None
        bound = estimate_prompt_tokens(messages, runner._tools, schema)
        chain = self.settings.model_chain(spec.tier)
        return self.gateway.worst_case(chain, bound, spec.limits.max_output_tokens)

    def prompt_bound(self, agent: str, text: str) -> int:
        spec = load_agent(agent)
        messages = [
            {"role": "system", "content": spec.system_prompt},
            {"role": "user", "content": text},
        ]
        schema = spec.output_schema.model_json_schema() if spec.output_schema else None
        return estimate_prompt_tokens(messages, self.runner(spec)._tools, schema)


def run_now(fn: Callable[[], None]) -> None:
    """A "background" refresh of shared gateway state that runs at once (deterministic)."""
    fn()


def make_rig(
    cloud: dict[str, Any],
    *,
    jitter: Callable[[], float] = lambda: 0.0,
    clock: Clock | None = None,
    spawn: Spawn | None = None,
    **overrides: Any,
) -> Rig:
    """A gateway over moto's tables and the fake model, with captured alerts and sleeps.

    The stores are the runtime's (DynamoDB on moto); the budget alerts go to a list.
    ``clock``: shared by rigs that stand for processes of one fleet; ``spawn``: how the
    breaker and key buckets refresh their per-process copies (``run_now``: inline).
    """
    settings = Settings(**overrides)
    alerts = MemoryAlerts()
    sleeps: list[float] = []
    clock = clock or Clock()
    runtime = Runtime(settings, clock=clock, sleep=sleeps.append)
    breaker, buckets = runtime.breaker, runtime.buckets
    if spawn is not None:
        limits = runtime.clients.table(settings.limits_table)
        breaker = CircuitBreaker(settings, DynamoBreakerStore(limits), clock=clock, spawn=spawn)
        buckets = KeyBuckets(settings, DynamoBucketStore(limits), clock=clock, spawn=spawn)
    budgets = BudgetLedger(
        settings,
        DynamoBudgetStore(runtime.clients.table(settings.budgets_table)),
        alerts=alerts,
        clock=clock,
    )
    gateway = ModelGateway(
        runtime.model_client,
        settings,
        runtime.prices,
        budgets=budgets,
        ledger=runtime.ledger,
        buckets=buckets,
        breaker=breaker,
        rollups=runtime.rollups,
        sleep=sleeps.append,
        jitter=jitter,
    )
    return Rig(settings, gateway, alerts.sent, sleeps, clock, runtime)


def set_keys(cloud: dict[str, Any], *keys: str) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=cloud["secret_arn"], SecretString=json.dumps({"api_keys": list(keys)})
    )


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


Factory = Callable[..., Rig]

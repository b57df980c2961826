"""The composition root: everything a function needs, built once per process.

A Lambda process builds one :class:`Runtime` (:func:`current`) on first use and
keeps it for every invocation it serves: settings are read and validated once,
AWS clients, stores and services are created once and reused. This is the only
place that decides which adapter implements which port; domain modules receive
their collaborators and never look them up. A SnapStart priming hook calls the
same code.

Tests and the local cloud build their own runtime (with moto, or with in-memory
fakes passed to the services) and :func:`install` it; :func:`reset` forgets the
process's runtime. There are no other caches to clear.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from stratus.aws import AwsClients
from stratus.config import Settings

if TYPE_CHECKING:
    from stratus.agents import AgentSpec, Principal
    from stratus.audit import AuditTrail
    from stratus.breaker import CircuitBreaker
    from stratus.budgets import BudgetLedger
    from stratus.flags import AgentFlags, FlagSource
    from stratus.gateway import ModelGateway
    from stratus.gateway_embeddings import EmbeddingGateway
    from stratus.health import Probe
    from stratus.invoke import InvokeService
    from stratus.jobs.callbacks import CallbackDelivery
    from stratus.jobs.ingest import Ingest
    from stratus.jobs.notifications import Notifier
    from stratus.jobs.ports import MessageQueue, WorkflowEngine
    from stratus.jobs.service import JobService
    from stratus.jobs.store import JobStore
    from stratus.jobs.sweep import LeaseSweeper
    from stratus.jobs.workflow import WorkflowTasks
    from stratus.keys import KeyProvider
    from stratus.ledger import CompletionStore
    from stratus.llm import ModelClient
    from stratus.memory.agent import AgentMemory
    from stratus.memory.service import MemoryService
    from stratus.prices import PriceTable
    from stratus.ratelimit import KeyBuckets
    from stratus.reviews import Reviews
    from stratus.rollups import UsageRollups
    from stratus.runner import AgentRunner
    from stratus.sessions import IdempotentMessages, SessionService
    from stratus.signing_keys import SigningKeys
    from stratus.streaming import (
        ConnectionPoster,
        StreamedExecution,
        StreamRouter,
        StreamStore,
        StreamTickets,
    )
    from stratus.tenant_limits import TenantLimiter
    from stratus.tenants import TenantDirectory
    from stratus.workflows import SupervisedWorkflow


class Runtime:
    """Settings, clients, stores and services of one process; members build on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        clients: AwsClients | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.clients = clients or AwsClients()
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.RLock()
        self._per_agent: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_env(cls) -> Runtime:
        return cls(Settings())

    def _agent_member(self, kind: str, spec: AgentSpec, build: Callable[[], Any]) -> Any:
        key = (kind, spec.name)
        with self._lock:
            if key not in self._per_agent:
                self._per_agent[key] = build()
            return self._per_agent[key]

    def release_for(self, spec: AgentSpec) -> str:
        """The release id ``spec`` runs as in this process, computed once per agent.

        ``STRATUS_RELEASE`` (the stack and the local cloud set it) names the release of the
        served agent; any other agent (a summarizer, a workflow's roles) or an empty value
        is hashed from its spec and these settings (:func:`stratus.releases.release_of`:
        a few small files, read at init, in the SnapStart priming).
        """

        def build() -> str:
            if self.settings.release and spec.name == self.settings.agent:
                return self.settings.release
            from stratus.releases import release_of

            return release_of(spec, self.settings)

        release: str = self._agent_member("release", spec, build)
        return release

    # -- model path (imports openai: only functions that call a model touch these)

    @cached_property
    def prices(self) -> PriceTable:
        from stratus.prices import load_price_table

        return load_price_table(self.settings.price_table)

    @cached_property
    def model_client(self) -> ModelClient:
        from stratus.llm import ModelClient

        return ModelClient(self.settings, self.keys)

    @cached_property
    def keys(self) -> KeyProvider:
        from stratus.gateway_stores.services import SecretsManagerSource
        from stratus.keys import KeyProvider

        return KeyProvider(self.settings, SecretsManagerSource(self.clients))

    @cached_property
    def gateway(self) -> ModelGateway:
        from stratus.gateway import ModelGateway

        return ModelGateway(
            self.model_client,
            self.settings,
            self.prices,
            budgets=self.budgets,
            ledger=self.ledger,
            buckets=self.buckets,
            breaker=self.breaker,
            rollups=self.rollups,
            sleep=self.sleep,
        )

    def runner(self, spec: AgentSpec) -> AgentRunner:
        from stratus.runner import AgentRunner

        return self._agent_member(
            "runner",
            spec,
            lambda: self.wire(AgentRunner(spec, self.gateway, self.prices, self.settings)),
        )

    def wire(self, runner: AgentRunner) -> AgentRunner:
        """``runner`` with what this runtime gives every agent run (also a subclass's, such
        as the eval target's recording runner): the audit trail and the agent's memory."""
        runner.audit = self.audit  # tool executions and denials are audited
        if runner.spec.memory is not None and self.settings.memory_bucket:
            runner.memory = self.agent_memory(runner.spec)  # recall, remember/recall tools
        return runner

    # -- long-term memory (issue 18): S3 Vectors, embeddings through the gateway

    @cached_property
    def embeddings(self) -> EmbeddingGateway:
        from stratus.gateway_embeddings import EmbeddingGateway
        from stratus.gateway_stores.dynamo import DynamoCompletionRecords

        name = self.settings.ledger_table
        records = DynamoCompletionRecords(self.clients.table(name)) if name else None
        return EmbeddingGateway(
            self.gateway,
            self.settings,
            self.prices,
            records=records,
            clock=self.clock,
            sleep=self.sleep,
        )

    @cached_property
    def memory(self) -> MemoryService:
        """The stage's memories (``STRATUS_MEMORY_BUCKET``; the ``/v1/memory`` routes)."""
        from stratus.errors import ConfigurationError
        from stratus.memory.s3vectors import S3VectorStore
        from stratus.memory.service import MemoryService

        s = self.settings
        if not s.memory_bucket:
            raise ConfigurationError("STRATUS_MEMORY_BUCKET is not set for this function")
        store = S3VectorStore(
            self.clients, s.memory_bucket, s.memory_index, distance=s.memory_distance
        )
        return MemoryService(store, self.embeddings, s, clock=self.clock)

    def agent_memory(self, spec: AgentSpec) -> AgentMemory:
        """``spec``'s use of :attr:`memory` (its policy; the fact extraction runner)."""
        from stratus.memory.agent import AgentMemory, facts_spec
        from stratus.runner import AgentRunner

        def build() -> AgentMemory:
            assert spec.memory is not None
            facts = AgentRunner(facts_spec(spec.memory), self.gateway, self.prices, self.settings)
            facts.screen_inputs = False  # the turn it reads was screened already
            return AgentMemory(spec, spec.memory, self.memory, facts)

        return self._agent_member("memory", spec, build)

    # -- services

    @cached_property
    def tenants(self) -> TenantDirectory:
        from stratus.errors import ConfigurationError
        from stratus.tenants import TenantStore

        if not self.settings.tenants_table:
            raise ConfigurationError("STRATUS_TENANTS_TABLE is not set")
        return TenantStore(self.settings.tenants_table, self.clients.client("dynamodb"))

    # -- feature flags (issue 19): Powertools Feature Flags on AppConfig, cached per process

    @cached_property
    def flags(self) -> FlagSource:
        """The stage's flags (AppConfig, ``flags_max_age_s`` cache; the bundled default
        document when ``STRATUS_FLAGS_APPLICATION`` is empty). Tests may replace it."""
        from stratus.flags.store import flag_source

        return flag_source(self.settings, self.clients)

    def agent_flags(
        self, spec: AgentSpec, tenant: str, who: Principal | None = None, *, refuse: bool = True
    ) -> AgentFlags:
        """The flags of one request to ``spec``; ``503 agent_disabled`` if they switch it
        off (``refuse``). No round trip beyond the source's cached fetch."""
        from stratus.flags import admit, flag_context, resolve

        release = self.release_for(spec)
        context = flag_context(
            self.settings, agent=spec.name, tenant_id=tenant, principal=who, release=release
        )
        return admit(self.flags, context) if refuse else resolve(self.flags, context)

    def health_probes(self) -> dict[str, Probe]:
        """The dependencies ``GET /v1/health`` checks for this function (stratus.health)."""
        from stratus.health import probes_for

        uses_model = bool(self.settings.agent or self.settings.model_secret_name)
        return probes_for(
            self.settings, self.clients, (lambda: self.keys.keys()) if uses_model else None
        )

    def invoke_service(self, spec: AgentSpec) -> InvokeService:
        from stratus.invoke import InvokeService

        def build() -> InvokeService:
            service = InvokeService(
                spec, self.settings, runner=self.runner(spec), clients=self.clients
            )
            service.reviews = self.reviews  # a share of answers is queued for review
            service.release = self.release_for(spec)
            return service

        return self._agent_member("invoke", spec, build)

    # -- gateway stores (budgets, ledger, key buckets, breaker, usage)
    # A table that is not configured turns budgets, the call ledger and the usage
    # rollups off; the breaker and the key buckets then keep their state in process.

    @cached_property
    def budgets(self) -> BudgetLedger:
        from stratus.budgets import BudgetLedger
        from stratus.gateway_stores.dynamo import DynamoBudgetStore
        from stratus.gateway_stores.memory import NoAlerts
        from stratus.gateway_stores.services import SnsAlertPublisher

        s = self.settings
        store = DynamoBudgetStore(self.clients.table(s.budgets_table)) if s.budgets_table else None
        alerts = (
            SnsAlertPublisher(self.clients, s.alerts_topic_name)
            if s.alerts_topic_name
            else NoAlerts()
        )
        ledger = BudgetLedger(s, store, alerts=alerts, clock=self.clock)
        ledger.admission = lambda scope: self.tenant_limits.take_for(scope)
        return ledger

    @cached_property
    def tenant_limits(self) -> TenantLimiter:
        """Tenants' request rates and queued-job caps (:mod:`stratus.tenant_limits`)."""
        from stratus.gateway_stores.dynamo import DynamoBucketStore
        from stratus.tenant_limits import TenantLimiter

        name = self.settings.limits_table
        store = DynamoBucketStore(self.clients.table(name)) if name else None
        return TenantLimiter(
            self.settings,
            store,
            overrides=lambda tenant: self.budgets.tenant_overrides(tenant),
            clock=self.clock,
        )

    @cached_property
    def ledger(self) -> CompletionStore:
        from stratus.gateway_stores.dynamo import DynamoCompletionRecords
        from stratus.ledger import CompletionStore

        name = self.settings.ledger_table
        records = DynamoCompletionRecords(self.clients.table(name)) if name else None
        return CompletionStore(self.settings, records, clock=self.clock)

    @cached_property
    def rollups(self) -> UsageRollups:
        from stratus.gateway_stores.dynamo import DynamoRollupStore
        from stratus.rollups import UsageRollups

        name = self.settings.usage_table
        store = DynamoRollupStore(self.clients.table(name)) if name else None
        return UsageRollups(self.settings, store, clock=self.clock, budgets=self.budgets)

    @cached_property
    def buckets(self) -> KeyBuckets:
        from stratus.gateway_stores.dynamo import DynamoBucketStore
        from stratus.gateway_stores.memory import MemoryBucketStore
        from stratus.ratelimit import KeyBuckets

        name = self.settings.limits_table
        store = DynamoBucketStore(self.clients.table(name)) if name else MemoryBucketStore()
        return KeyBuckets(self.settings, store, clock=self.clock)

    @cached_property
    def breaker(self) -> CircuitBreaker:
        from stratus.breaker import CircuitBreaker
        from stratus.gateway_stores.dynamo import DynamoBreakerStore
        from stratus.gateway_stores.memory import MemoryBreakerStore

        name = self.settings.limits_table
        store = DynamoBreakerStore(self.clients.table(name)) if name else MemoryBreakerStore()
        return CircuitBreaker(self.settings, store, clock=self.clock)

    # -- sessions

    def session_service(self, spec: AgentSpec) -> SessionService:
        """The session service of ``spec`` (an agent with sessions) on the sessions table."""
        return self._agent_member("sessions", spec, lambda: self._new_session_service(spec))

    def summarizer_runner(self, summarizer: AgentSpec) -> AgentRunner:
        """The summarizer reads turns already screened: its input is not screened again."""
        from stratus.runner import AgentRunner

        runner = AgentRunner(summarizer, self.gateway, self.prices, self.settings)
        runner.screen_inputs = False
        return runner

    def _new_session_service(self, spec: AgentSpec) -> SessionService:
        from stratus.errors import ConfigurationError
        from stratus.sessions import DynamoSessionStore, SessionService, summarizer_spec

        if spec.sessions is None:
            raise ConfigurationError(f"agent {spec.name} has no sessions")
        if not self.settings.sessions_table:
            raise ConfigurationError("STRATUS_SESSIONS_TABLE is not set for this function")
        table = self.clients.table(self.settings.sessions_table)
        summarizer = summarizer_spec(spec.sessions)
        service = SessionService(
            spec,
            self.settings,
            DynamoSessionStore(table, sleep=self.sleep),
            self.runner(spec),
            self.summarizer_runner(summarizer),
            clock=self.clock,
            sleep=self.sleep,
            clients=self.clients,
        )
        service.reviews = self.reviews  # a share of turns is queued for review
        service.release = self.release_for(spec)
        return service

    def session_messages(self, spec: AgentSpec) -> IdempotentMessages:
        """:meth:`session_service` under ``Idempotency-Key`` (the message route uses it)."""
        from stratus.sessions import IdempotentMessages

        return self._agent_member(
            "session_messages",
            spec,
            lambda: IdempotentMessages(
                self.session_service(spec),
                self.settings,
                client=lambda: self.clients.client("dynamodb"),
            ),
        )

    # -- jobs, queues, workflows, notifications

    @cached_property
    def job_store(self) -> JobStore:
        from stratus.errors import ConfigurationError
        from stratus.jobs.dynamo import DynamoJobStore

        if not self.settings.jobs_table:
            raise ConfigurationError("STRATUS_JOBS_TABLE is not set")
        store = DynamoJobStore(
            self.clients.table(self.settings.jobs_table),
            retention_days=self.settings.job_retention_days,
            clock=self.clock,
        )
        store.queued_hold_s = self.settings.job_sweep_hold_s
        return store

    @cached_property
    def job_queue(self) -> MessageQueue:
        from stratus.jobs.aws_adapters import SqsQueue

        return SqsQueue(self.clients)

    @cached_property
    def job_workflows(self) -> WorkflowEngine:
        from stratus.jobs.aws_adapters import StepFunctionsEngine

        return StepFunctionsEngine(self.clients)

    @cached_property
    def job_notifier(self) -> Notifier:
        from stratus.jobs.aws_adapters import SnsPublisher
        from stratus.jobs.notifications import Notifier

        topic = self.settings.jobs_topic_arn
        return Notifier(publisher=SnsPublisher(self.clients, topic) if topic else None)

    @cached_property
    def job_callbacks(self) -> CallbackDelivery:
        from stratus.jobs.aws_adapters import SecretsManagerSource
        from stratus.jobs.callbacks import CallbackDelivery, PinnedHttpSender

        return CallbackDelivery(
            self.job_store,
            self.job_queue,
            PinnedHttpSender(),
            settings=self.settings,
            secrets=SecretsManagerSource(self.clients),
            signing_keys=self.signing_keys if self.settings.callback_keys_table else None,
            clock=self.clock,
        )

    @cached_property
    def signing_keys(self) -> SigningKeys:
        """The tenants' callback signing keys (:mod:`stratus.signing_keys`)."""
        from stratus.errors import ConfigurationError
        from stratus.signing_keys import DynamoSigningKeyStore, SigningKeys

        if not self.settings.callback_keys_table:
            raise ConfigurationError("STRATUS_CALLBACK_KEYS_TABLE is not set")
        table = self.clients.table(self.settings.callback_keys_table)
        return SigningKeys(DynamoSigningKeyStore(table), clock=self.clock)

    @cached_property
    def jobs(self) -> JobService:
        from stratus.jobs.service import JobService

        service = JobService(
            self.job_store,
            self.job_queue,
            self.job_notifier,
            settings=self.settings,
            workflows=self.job_workflows,
            clients=self.clients,
            budgets=self.budgets if self.settings.budgets_table else None,
        )
        service.reviews = self.reviews  # a share of succeeded jobs' answers is reviewed
        service.audit = self.audit  # approvals and rejections are audited
        service.queued_cap = self.tenant_limits.max_queued_jobs  # 429 too_many_jobs
        return service

    @cached_property
    def reviews(self) -> Reviews:
        """Human review sampling (``offer``) and grading; off without the reviews table."""
        from stratus.reviews import Reviews
        from stratus.reviews_dynamo import DynamoReviewStore

        name = self.settings.reviews_table
        store = DynamoReviewStore(self.clients.table(name)) if name else None
        return Reviews(self.settings, store, clock=self.clock)

    @cached_property
    def audit(self) -> AuditTrail:
        """The audit trail (:mod:`stratus.audit`): only logged without the audit table."""
        from stratus.audit import AuditTrail
        from stratus.audit_dynamo import DynamoAuditStore

        s = self.settings
        store = (
            DynamoAuditStore(
                self.clients.table(s.audit_table), retention_days=s.audit_retention_days
            )
            if s.audit_table
            else None
        )
        return AuditTrail(store, clock=self.clock)

    @cached_property
    def job_sweeper(self) -> LeaseSweeper:
        from stratus.jobs.sweep import LeaseSweeper

        return LeaseSweeper(self.jobs)

    @cached_property
    def job_ingest(self) -> Ingest:
        from stratus.jobs.ingest import Ingest
        from stratus.jobs.producers import ProducerBindings

        tenants = self.tenants if self.settings.tenants_table else None
        producers = ProducerBindings.from_json(self.settings.producers)
        return Ingest(self.jobs, tenants, self.job_queue, self.settings.ingest_dlq_url, producers)

    def workflow_tasks(self, spec: AgentSpec, flow: SupervisedWorkflow) -> WorkflowTasks:
        """The task actions of ``spec``'s supervised workflow ``flow``."""
        from stratus.jobs.workflow import WorkflowTasks

        def build() -> WorkflowTasks:
            runners = {
                "plan": self.runner(flow.planner),
                "research": self.runner(flow.worker),
                "review": self.runner(flow.reviewer),
            }
            return WorkflowTasks(self.jobs, flow, runners)

        return self._agent_member("workflow_tasks", spec, build)

    # -- WebSocket streaming (issue 17): built by stratus.streaming.wiring

    @cached_property
    def streams(self) -> StreamStore:
        from stratus.streaming import wiring

        return wiring.stream_store(self)

    @cached_property
    def stream_poster(self) -> ConnectionPoster:
        from stratus.streaming import wiring

        return wiring.stream_poster(self)

    @cached_property
    def stream_tickets(self) -> StreamTickets:
        from stratus.streaming.tickets import StreamTickets

        return StreamTickets(self.streams, clock=self.clock)

    @cached_property
    def stream_router(self) -> StreamRouter:
        from stratus.streaming import wiring

        return wiring.stream_router(self)

    @cached_property
    def streamed(self) -> StreamedExecution:
        from stratus.streaming.execution import StreamedExecution

        return StreamedExecution(self.streams, self.stream_poster, clock=self.clock)


_current: Runtime | None = None
_current_lock = threading.Lock()


def current() -> Runtime:
    """This process's runtime, built from the environment on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Runtime.from_env()
        return _current


def install(runtime: Runtime | None) -> None:
    """Make ``runtime`` this process's runtime (tests, the local cloud); None forgets it."""
    global _current
    with _current_lock:
        _current = runtime


def reset() -> None:
    """Forget this process's runtime: the next :func:`current` reads the environment again."""
    install(None)

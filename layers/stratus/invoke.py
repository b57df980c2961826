"""Synchronous agent invocation, with optional idempotency.

``InvokeService`` turns a validated request into the public response shape.
With an ``Idempotency-Key`` the whole invocation runs under Powertools
idempotency (DynamoDB): a repeat of the same (tenant, agent, key) returns the
stored response without calling the model again, the same key with a
different body is refused, and a failed run leaves no record so it can be
retried. The key is scoped by tenant, so tenants never see each other's
responses even if they pick the same key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratus import after_response
from stratus.agents import AgentSpec, CallScope, Principal, ToolContext
from stratus.aws import AwsClients
from stratus.config import Settings
from stratus.contracts import AgentRef, InvokeRequest, InvokeResponse, ToolCallView
from stratus.deadline import Deadline
from stratus.gateway_bookkeeping import deferred
from stratus.idempotency import IdempotentOperation
from stratus.observability import logger
from stratus.release_tags import ReleaseTagged, emit_task, is_task_error
from stratus.runner import AgentRunner
from stratus.stream_events import OnEvent
from stratus.task_metrics import task_clock, task_ended

if TYPE_CHECKING:
    from stratus.reviews import Reviews


class InvokeService(ReleaseTagged):
    """Runs one agent for one tenant; created once per warm function.

    Its answers carry the agent's ``release`` and ``prompt_version`` (``agent``), and each
    finished one emits the task metrics (:mod:`stratus.release_tags`).
    """

    #: Human review sampling (the composition root sets it); None: no answer is offered.
    reviews: Reviews | None = None

    def __init__(
        self,
        spec: AgentSpec,
        settings: Settings,
        *,
        runner: AgentRunner,
        clients: AwsClients | None = None,
    ) -> None:
        self.spec = spec
        self._settings = settings
        self._runner = runner
        self._clients = clients
        self._idempotent = IdempotentOperation(
            f"invoke.{spec.name}",
            settings,
            self._replayable_invoke,
            # The caller (key, role, end customer) is part of the key: a replay never hands
            # one role's or customer's answer to another.
            scope_fields=("tenant", "agent", "caller"),
            # Round trips: the record's put (1), the pre-call wave (2), then the post-call
            # wave together with the record's save (3): chat returns before its wave.
            around=deferred,
            client=(lambda: clients.client("dynamodb")) if clients is not None else None,
        )

    def invoke(
        self,
        request: InvokeRequest,
        *,
        tenant_id: str,
        request_id: str,
        deadline: Deadline | None = None,
        scope_id: str | None = None,
        principal: Principal | None = None,
        on_event: OnEvent | None = None,
    ) -> dict[str, Any]:
        # The model calls' post-call waves run while the answer is finished (guardrails,
        # metrics, the response, a review offer) and are waited for before it is returned:
        # the second round trip overlaps the handler's own work, nothing is returned unpaid.
        with deferred():
            return self._invoke(
                request,
                tenant_id=tenant_id,
                request_id=request_id,
                deadline=deadline,
                scope_id=scope_id,
                principal=principal,
                on_event=on_event,
            )

    def _invoke(
        self,
        request: InvokeRequest,
        *,
        tenant_id: str,
        request_id: str,
        deadline: Deadline | None,
        scope_id: str | None,
        principal: Principal | None,
        on_event: OnEvent | None,
    ) -> dict[str, Any]:
        scope = CallScope(
            tenant_id=tenant_id,
            agent=self.spec.name,
            kind="request",
            # A replay under the same Idempotency-Key is the same billable unit.
            scope_id=scope_id or request_id,
            # A plain request is never retried (API Gateway does not retry Lambda);
            # only one under an Idempotency-Key can come again: only it uses the ledger.
            replayable=scope_id is not None,
        )
        ctx = ToolContext(
            tenant_id=tenant_id,
            agent=self.spec.name,
            request_id=request_id,
            scope=scope,
            settings=self._settings,
            clients=self._clients,
            **(principal or Principal()).context(),
        )
        started = task_clock()  # the operator metrics of the task (stratus.task_metrics)
        try:
            result = self._runner.run(request.input, ctx=ctx, deadline=deadline, on_event=on_event)
        except Exception as exc:
            task_ended(self.spec.name, "sync", error=exc, started=started)
            if is_task_error(exc):  # the agent failed (not a refusal of the request)
                emit_task(self.spec.name, self.release, cost_usd=None, failed=True)
            raise
        task_ended(self.spec.name, "sync", result=result, started=started)
        emit_task(self.spec.name, self.release, cost_usd=result.cost_usd, failed=False)
        invoked = {
            "tenant_id": tenant_id,
            "agent": self.spec.name,
            "model": result.model,
            "model_calls": result.model_calls,
            "usage": result.usage.model_dump(),
            "cost_usd": str(result.cost_usd),
            "fake_model": result.fake_model,
            "fallback_from": result.fallback_from,
            "downgraded": result.downgraded,
            "ledger_hits": result.ledger_hits,
            "cache_hits": result.cache_hits,
        }

        def agent_invoked() -> None:
            logger.info("agent invoked", extra=invoked)

        after_response.later(agent_invoked)  # after the answer on Lambda
        response = InvokeResponse(
            output=result.output,
            usage=result.usage,
            cost_usd=float(result.cost_usd),
            model=result.model,
            agent=AgentRef(name=self.spec.name, version=self.spec.version, **self.release_fields),
            request_id=request_id,
            tool_calls=[ToolCallView(**call.to_json()) for call in result.tool_calls],
        )
        if self.reviews is not None:  # a share of answers is queued for review: 1 PutItem
            self.reviews.offer(
                tenant_id,
                self.spec.name,
                self.release,
                "invoke",
                request_id,
                request.input,
                result.output,
                result.model,
            )
        return response.model_dump(mode="json")

    def invoke_idempotent(
        self,
        request: InvokeRequest,
        *,
        key: str,
        tenant_id: str,
        request_id: str,
        lambda_context: Any = None,
        deadline: Deadline | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        caller = (principal or Principal()).encode()
        return self._idempotent(
            key=key,
            scope={"tenant": tenant_id, "agent": self.spec.name, "caller": caller},
            body=request.model_dump(mode="json"),
            request_id=request_id,
            lambda_context=lambda_context,
            deadline=deadline,
        )

    def _replayable_invoke(self, data: dict[str, Any], deadline: Deadline | None) -> dict[str, Any]:
        return self.invoke(
            InvokeRequest.model_validate(data["body"]),
            tenant_id=data["tenant"],
            request_id=data["request_id"],
            scope_id=f"idempotency:{data['key']}",
            deadline=deadline,
            principal=Principal.decode(data.get("caller")),
        )

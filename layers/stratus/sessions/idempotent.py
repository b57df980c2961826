"""Session messages under an ``Idempotency-Key`` (Powertools idempotency)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stratus.agents import Principal
from stratus.config import Settings
from stratus.deadline import Deadline
from stratus.sessions.service import SessionService


class IdempotentMessages:
    """``post_message`` under an ``Idempotency-Key``, scoped by (tenant, agent, session).

    A repeat with the same key returns the stored reply without a new turn; the same
    key with another message is ``idempotency_key_reused``; a failed turn (or a 409)
    leaves no record, so the retry runs. Built once per process (the composition root).
    """

    def __init__(
        self,
        service: SessionService,
        settings: Settings,
        *,
        client: Callable[[], Any] | None = None,
    ) -> None:
        """``client``: the process's DynamoDB client for the records (its configuration and
        connections, as the invoke route's); else Powertools builds its own."""
        # Powertools idempotency loads only when a session route is first served.
        from stratus.idempotency import IdempotentOperation

        self._service = service
        self._operation = IdempotentOperation(
            f"session_message.{service.spec.name}",
            settings,
            self._post,
            # The sender is part of the key: a replay never hands one role's reply to another.
            scope_fields=("tenant", "agent", "session", "caller"),
            client=client,
        )

    def post(
        self,
        tenant_id: str,
        session_id: str,
        message: str,
        *,
        key: str,
        request_id: str,
        lambda_context: Any = None,
        deadline: Deadline | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        who = principal or Principal()
        # Size and existence first: a 413/404 must not depend on the key's history.
        if len(message) > self._service.policy.max_message_chars:
            self._service.post_message(tenant_id, session_id, message, request_id=request_id)
        return self._operation(
            key=key,
            scope={
                "tenant": tenant_id,
                "agent": self._service.spec.name,
                "session": session_id,
                "caller": who.encode(),
            },
            body={"message": message},
            request_id=request_id,
            lambda_context=lambda_context,
            deadline=deadline,
        )

    def _post(self, data: dict[str, Any], deadline: Deadline | None) -> dict[str, Any]:
        return self._service.post_message(
            data["tenant"],
            data["session"],
            data["body"]["message"],
            request_id=data["request_id"],
            deadline=deadline,
            principal=Principal.decode(data.get("caller")),
        )

"""``Idempotency-Key`` support for any operation, on Powertools idempotency.

A repeat of the same (scope, key) returns the first response without running
the operation again; the same key with a different body is refused
(``idempotency_key_reused``); while the first run is in flight a repeat gets
``idempotency_in_progress``; a run that raised leaves no record, so it can be
retried with the same key. Scope fields (tenant, agent, session, ...) are part
of the key, so two tenants choosing the same key never see each other's answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from stratus.config import Settings
from stratus.contracts import MAX_IDEMPOTENCY_KEY_LEN
from stratus.deadline import Deadline
from stratus.errors import (
    ConfigurationError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    ValidationFailed,
)

#: The operation: ``(data, deadline) -> response``; ``data`` holds the scope
#: fields, ``key``, ``body`` and ``request_id`` (carried through, not hashed).
Operation = Callable[[dict[str, Any], Deadline | None], dict[str, Any]]


class IdempotentOperation:
    """One operation made idempotent per (scope fields, key); built once per process."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        operation: Operation,
        *,
        scope_fields: Sequence[str],
        around: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
        client: Callable[[], Any] | None = None,
    ) -> None:
        """``around``: a context the whole idempotent run (record put, operation, record
        save) runs in; the gateway's ``deferred`` lets the operation's last writes overlap
        Powertools' save of the record. ``client``: the process's DynamoDB client (its
        configuration, its connections) for the records; else Powertools builds its own."""
        self._name = name
        self._client = client
        self._around = around
        self._settings = settings
        self._operation = operation
        self._scope_fields = tuple(scope_fields)
        self._run: Callable[..., dict[str, Any]] | None = None
        self._config: IdempotencyConfig | None = None

    def __call__(
        self,
        *,
        key: str,
        scope: dict[str, str],
        body: dict[str, Any],
        request_id: str,
        lambda_context: Any = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY_LEN:
            raise ValidationFailed(
                f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters",
                details={"field": "Idempotency-Key"},
            )
        if set(scope) != set(self._scope_fields):
            raise ValueError(f"scope must have exactly {self._scope_fields}")
        run, config = self._build()
        if lambda_context is not None:
            # Without this a call that times out blocks retries for the whole expiry.
            config.register_lambda_context(lambda_context)
        data = {**scope, "key": key, "body": body, "request_id": request_id}
        try:
            with self._around():
                return run(data=data, deadline=deadline)
        except IdempotencyValidationError as exc:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body"
            ) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise IdempotencyInProgress(
                "a request with this Idempotency-Key is still running; retry shortly"
            ) from exc

    def _build(self) -> tuple[Callable[..., dict[str, Any]], IdempotencyConfig]:
        if self._run is None or self._config is None:
            if not self._settings.idempotency_table:
                raise ConfigurationError("STRATUS_IDEMPOTENCY_TABLE is not set")
            config = IdempotencyConfig(
                event_key_jmespath="[" + ", ".join((*self._scope_fields, "key")) + "]",
                payload_validation_jmespath="body",
                raise_on_no_idempotency_key=True,
                expires_after_seconds=self._settings.idempotency_ttl_s,
            )
            store = DynamoDBPersistenceLayer(
                table_name=self._settings.idempotency_table,
                boto3_client=self._client() if self._client is not None else None,
            )
            operation = self._operation

            def run(data: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
                return operation(data, deadline)

            # Powertools prefixes records with the function's qualified name: one per
            # operation, so different operations never share a record.
            run.__qualname__ = run.__name__ = self._name
            self._run = idempotent_function(
                data_keyword_argument="data", persistence_store=store, config=config
            )(run)
            self._config = config
        return self._run, self._config

"""The ingest queue's domain: producer contract v1 messages become jobs.

Each valid message becomes a job (idempotent: the job id derives from the
message's ``idempotency_key``, or from its SQS message id, so a redelivered
message never creates a second job) and is sent on to its agent's own queue.

A message that can never succeed (not JSON or nested too deeply, not the contract,
unknown version, a sender not bound to the message's tenant, unknown agent, unknown or
inactive tenant, a reused idempotency key, an input over the agent's limits) is a
*poison* message: it is copied to the ingest DLQ with the reason in message
attributes (``stratus_reason``, ``stratus_detail``, ...) and acknowledged, so it
never blocks its batch and is never retried pointlessly. Transient failures
raise: the record comes back, and after ``maxReceiveCount`` SQS itself moves it
to the same DLQ.
"""

from __future__ import annotations

from collections.abc import Callable

from stratus import correlation
from stratus.errors import ConfigurationError, IdempotencyKeyReused, InputTooLarge
from stratus.jobs.contracts import PoisonMessage, ProducerMessage, parse_producer_message
from stratus.jobs.ports import MessageQueue, TenantCheck
from stratus.jobs.producers import ProducerBindings
from stratus.jobs.service import JobService
from stratus.observability import logger

MAX_DETAIL_CHARS = 1000


class Ingest:
    """Admits producer messages as jobs; dead-letters the ones that never can be."""

    def __init__(
        self,
        jobs: JobService,
        tenants: TenantCheck | None,
        dead_letters: MessageQueue,
        dlq_url: str,
        producers: ProducerBindings | None = None,
    ) -> None:
        self.producers = producers or ProducerBindings(None)
        self.jobs = jobs
        self.tenants = tenants
        self.dead_letters = dead_letters
        self.dlq_url = dlq_url

    def admit(self, body: str, *, sender_id: str = "", account_id: str = "") -> ProducerMessage:
        """The message, or :class:`PoisonMessage` with its reason code.

        Reasons: ``invalid_json``, ``invalid_message``, ``unsupported_version``,
        ``producer_not_allowed`` (the sender is not bound to the message's tenant; checked
        before the agent and tenant, so an unbound sender learns nothing about either),
        ``unknown_agent``, ``unknown_tenant`` (and, at submission, ``input_too_large``,
        ``idempotency_key_reused``).
        """
        message = parse_producer_message(body)
        if not self.producers.allows(sender_id, message.tenant_id, account_id=account_id):
            raise PoisonMessage(
                "producer_not_allowed",
                f"the sender {sender_id or '(none)'!r} may not submit jobs for this tenant",
            )
        if not self.jobs.knows(message.agent):
            raise PoisonMessage("unknown_agent", f"no agent named {message.agent!r}")
        if self.tenants is None:
            raise ConfigurationError("STRATUS_TENANTS_TABLE is not set")
        if not self.tenants.is_active(message.tenant_id):
            raise PoisonMessage("unknown_tenant", f"no active tenant {message.tenant_id!r}")
        return message

    def accept(
        self,
        body: str,
        *,
        message_id: str,
        source_queue: str = "",
        receive_count: str = "1",
        input_limit: Callable[[str], int | None] | None = None,
        sender_id: str = "",
        account_id: str = "",
        correlation_id: str | None = None,
    ) -> bool | None:
        """Submit the message's job: True if it is new, False if it existed, None if poison.

        ``correlation_id``: the producer's message attribute ``correlation_id`` (valid or
        None: a new one is generated), stored on the job and on every log line.

        ``input_limit``: agent -> its ``limits.max_input_chars`` (the handler knows specs).
        ``sender_id``: the record's ``SenderId``; ``account_id``: the queue's account.
        """
        correlation.bind(correlation.valid(correlation_id) or correlation.new_id())
        try:
            message = self.admit(body, sender_id=sender_id, account_id=account_id)
            try:
                _, created = self.jobs.submit(
                    message.request(),
                    tenant_id=message.tenant_id,
                    idempotency_key=message.idempotency_key or f"sqs:{message_id}",
                    source="sqs",
                    max_input_chars=input_limit(message.agent) if input_limit else None,
                )
            except IdempotencyKeyReused as exc:
                raise PoisonMessage("idempotency_key_reused", exc.message) from None
            except InputTooLarge as exc:
                raise PoisonMessage("input_too_large", exc.message) from None
        except PoisonMessage as poison:
            self.dead_letter(
                body,
                poison,
                message_id=message_id,
                source_queue=source_queue,
                receive_count=receive_count,
            )
            return None
        return created

    def dead_letter(
        self,
        body: str,
        poison: PoisonMessage,
        *,
        message_id: str,
        source_queue: str,
        receive_count: str,
    ) -> None:
        """Copy the message to the ingest DLQ with its reason; the original is then acknowledged."""
        if not self.dlq_url:
            raise ConfigurationError("STRATUS_INGEST_DLQ_URL is not set")
        attributes = {
            "stratus_reason": poison.reason,
            "stratus_detail": poison.detail[:MAX_DETAIL_CHARS] or poison.reason,
            "stratus_source_message_id": message_id,
            "stratus_source_queue": source_queue,
            "stratus_receive_count": receive_count or "1",
        }
        self.dead_letters.send(self.dlq_url, body or "(empty)", attributes)
        logger.warning(
            "poison message moved to the DLQ",
            extra={"reason": poison.reason, "detail": poison.detail, "message_id": message_id},
        )

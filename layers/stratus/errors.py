"""The stable error model: every failure a client can see has a code.

Codes are part of the public API and never change meaning. The HTTP status for
each code is decided here and nowhere else.
"""

from __future__ import annotations

from typing import Any, ClassVar


class StratusError(Exception):
    """Base class: an error with a stable code, an HTTP status and a safe message."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


class BadRequest(StratusError):
    """The request is malformed (not JSON, wrong content type)."""

    code = "invalid_request"
    status = 400


class InvalidJson(BadRequest):
    """The body is not valid JSON."""

    code = "invalid_json"


class ValidationFailed(StratusError):
    """The body is JSON but does not match the schema; details name the fields."""

    code = "validation_error"
    status = 422


class Unauthorized(StratusError):
    code = "unauthorized"
    status = 401


class AgentNotFound(StratusError):
    code = "agent_not_found"
    status = 404


class RouteNotFound(StratusError):
    code = "not_found"
    status = 404


class IdempotencyKeyReused(StratusError):
    """The same Idempotency-Key was sent with a different request body."""

    code = "idempotency_key_reused"
    status = 409


class IdempotencyInProgress(StratusError):
    """A request with this Idempotency-Key is still running; retry later."""

    code = "idempotency_in_progress"
    status = 409


class PayloadTooLarge(StratusError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(StratusError):
    """A request body sent with a ``Content-Type`` other than JSON."""

    code = "unsupported_media_type"
    status = 415


class ConfigurationError(StratusError):
    """The deployment is misconfigured (missing table, unpriced model)."""

    code = "configuration_error"
    status = 500


class ModelUnavailable(StratusError):
    """The provider could not be reached or timed out after retries."""

    code = "model_unavailable"
    status = 503


class ModelRateLimited(StratusError):
    """The provider kept answering 429 after retries."""

    code = "model_rate_limited"
    status = 503


class ModelProviderError(StratusError):
    """The provider answered with a server error after retries."""

    code = "model_provider_error"
    status = 502


class ModelAuthFailed(StratusError):
    """The provider refused our API key: an operator must fix the secret."""

    code = "model_auth_failed"
    status = 502


class ModelRequestRejected(StratusError):
    """The provider rejected the request itself (400/404/422)."""

    code = "model_request_rejected"
    status = 502


class ModelOutputInvalid(StratusError):
    """The model's structured output did not validate against the agent's schema."""

    code = "model_output_invalid"
    status = 502


class MaxIterationsExceeded(StratusError):
    """The agent's tool loop did not finish within its iteration limit."""

    code = "max_iterations_exceeded"
    status = 502


class DeadlineExceeded(StratusError):
    """Not enough time is left before the function's deadline to call the model."""

    code = "deadline_exceeded"
    status = 504


class InputTooLarge(StratusError):
    """The agent input is longer than the agent's ``max_input_chars`` limit."""

    code = "input_too_large"
    status = 413


class BudgetExceeded(StratusError):
    """A budget (tenant, agent, global or per-task) has no room for the call's worst case.

    ``details`` name the scope, its limit and ``resets_at`` (ISO 8601, UTC; None for
    a per-task cap, which never resets); ``Retry-After`` says when the period resets.
    """

    code = "budget_exceeded"
    status = 429


# -- asynchronous jobs ----------------------------------------------------------------


class JobNotFound(StratusError):
    """No job with this id exists for the caller's tenant (other tenants' jobs included)."""

    code = "job_not_found"
    status = 404


class JobNotWaitingApproval(StratusError):
    """An approval was sent for a job that is not waiting for one."""

    code = "job_not_waiting_approval"
    status = 409


class JobAlreadyFinished(StratusError):
    """The job already succeeded, failed or was cancelled."""

    code = "job_already_finished"
    status = 409


class JobBudgetExceeded(StratusError):
    """The job has spent its ``max_cost_usd``; no further costly step may start."""

    code = "job_budget_exceeded"
    status = 402


class SessionNotFound(StratusError):
    """No such session for this tenant and agent, or it was deleted or has expired.

    Another tenant's session gets this too (never 403): its existence is not revealed.
    """

    code = "session_not_found"
    status = 404


class SessionBusy(StratusError):
    """The session is running a turn (``reject`` policy), or the wait in line timed out."""

    code = "session_busy"
    status = 409


class MessageTooLarge(StratusError):
    """A session message is longer than the agent's ``sessions.max_message_chars``."""

    code = "message_too_large"
    status = 413


class InputRejected(StratusError):
    """A guardrail blocked untrusted text before it reached a model (``details.category``).

    A job fails with this code; a session message that gets it is not applied.
    """

    code = "input_rejected"
    status = 422


class OutputBlocked(StratusError):
    """Output moderation blocked the model's reply; nothing of it leaves Stratus."""

    code = "output_blocked"
    status = 502


class AgentNotStreamable(StratusError):
    """A streamed request named an agent or action the WebSocket API does not serve."""

    code = "not_streamable"
    status = 400


class MemoryNotFound(StratusError):
    """No such memory for this tenant (another tenant's gets this too: never revealed)."""

    code = "memory_not_found"
    status = 404


class AgentDisabled(StratusError):
    """A feature flag (``agent_disabled``) turned the agent off for this caller's segment;
    nothing of the request ran. It comes back without a redeploy once the flag is lifted
    (within the flags' cache time, ``STRATUS_FLAGS_MAX_AGE_S``)."""

    code = "agent_disabled"
    status = 503

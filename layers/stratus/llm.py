"""The model client: the ``openai`` SDK, with keys, deadlines and retries done right.

* Keys come from Secrets Manager through Powertools parameters (cached), or
  from ``OPENAI_API_KEY`` when running locally.
* Every request's timeout is cut to the time the Lambda has left, minus a
  margin to answer, so a slow provider can never make the function time out.
* Transient failures (connection errors, timeouts, 408/409/429/5xx) are
  retried with exponential backoff and full jitter, honouring ``Retry-After``;
  the SDK's own retries are off so that this loop alone owns the time budget.
* Usage is read from every response, and provider failures become stable
  Stratus errors (502/503/504 with a code), never a bare 500.

``openai`` is imported only here, and this module is only imported on paths
that call a model, which keeps cold starts of the other handlers small.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from stratus.config import Settings
from stratus.deadline import Deadline, NoDeadline
from stratus.errors import (
    DeadlineExceeded,
    ModelAuthFailed,
    ModelOutputInvalid,
    ModelProviderError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelUnavailable,
    StratusError,
)
from stratus.keys import KeyProvider
from stratus.observability import logger
from stratus.usage import Usage

FAKE_MODEL_FINGERPRINT = "stratus-fake-model"
#: Below this many seconds a model call is not worth starting.
MIN_CALL_S = 1.0
#: Never wait longer than this on a provider's Retry-After.
MAX_RETRY_AFTER_S = 30.0
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ChatResult:
    """One completed model call."""

    message: Any  # openai ParsedChatCompletionMessage
    model: str  # the model we asked for (and price)
    response_model: str  # what the provider says answered
    usage: Usage
    finish_reason: str
    attempts: int
    latency_ms: float
    fake_model: bool
    #: Set by the gateway: replayed from the call ledger, or a response-cache hit
    #: (then ``usage`` is zero: nothing was consumed), and the models it moved from.
    replayed: bool = False
    cache_hit: bool = False
    fallback_from: tuple[str, ...] = ()
    downgraded: bool = False


def retry_after_s(response: Any) -> float | None:
    """Seconds the provider asked us to wait, from ``retry-after(-ms)`` headers."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            continue  # an HTTP date: rare from model providers; fall back to backoff
    return None


class ModelClient:
    """Chat completions with deadline-aware retries; one instance per process."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyProvider | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._keys = keys or KeyProvider(settings)
        self._sleep = sleep
        self._jitter = jitter
        self._clients: dict[str, openai.OpenAI] = {}
        self._lock = threading.Lock()
        self._warned_fake = False

    @property
    def keys(self) -> KeyProvider:
        return self._keys

    @property
    def endpoint(self) -> str:
        """The provider endpoint (host), as the circuit breaker names it."""
        base = self._settings.openai_base_url
        if base is None:
            return "api.openai.com"
        return f"{base.host}:{base.port}" if base.port else str(base.host)

    def _client(self, api_key: str | None = None) -> openai.OpenAI:
        key = api_key or self._keys.keys()[0]
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                base_url = self._settings.openai_base_url
                client = openai.OpenAI(
                    api_key=key,
                    base_url=str(base_url) if base_url else None,
                    max_retries=0,
                    timeout=self._settings.model_timeout_s,
                )
                self._clients[key] = client
            return client

    def chat(
        self,
        *,
        model: str,
        messages: Sequence[dict[str, Any]],
        max_output_tokens: int,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
        response_format: type[BaseModel] | None = None,
        deadline: Deadline | None = None,
        api_key: str | None = None,
        max_attempts: int | None = None,
    ) -> ChatResult:
        """One chat completion, retried up to ``max_attempts`` (default: the setting).

        ``api_key`` picks one of the provider keys (the gateway's least-loaded
        key); a final retryable error carries ``retry_wait_s``, the wait the
        provider asked for (or the backoff), for a caller that retries itself.
        """
        deadline = deadline or NoDeadline()
        limit = max_attempts or self._settings.model_max_attempts
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "max_completion_tokens": max_output_tokens,
        }
        if tools:
            kwargs["tools"] = list(tools)
            if tool_choice:
                kwargs["tool_choice"] = tool_choice
        if response_format is not None:
            kwargs["response_format"] = response_format

        attempt = 0
        while True:
            attempt += 1
            timeout = self._timeout(deadline)
            started = time.perf_counter()
            try:
                completion = self._client(api_key).chat.completions.parse(**kwargs, timeout=timeout)
            except openai.LengthFinishReasonError as exc:
                raise ModelOutputInvalid(
                    "the model ran out of output tokens before finishing its answer"
                ) from exc
            except PydanticValidationError as exc:
                raise ModelOutputInvalid(
                    "the model's answer does not match the agent's output schema",
                    details={"errors": exc.errors(include_url=False, include_input=False)},
                ) from exc
            except openai.APIError as exc:
                error, wait = self._classify(exc, attempt)
                error.retry_wait_s = wait  # type: ignore[attr-defined]
                if wait is None or attempt >= limit:
                    raise error from exc
                pause = min(wait, MAX_RETRY_AFTER_S)
                if pause + MIN_CALL_S > deadline.remaining_s() - self._settings.deadline_margin_s:
                    raise error from exc
                logger.warning(
                    "model call failed, retrying",
                    extra={
                        "model": model,
                        "attempt": attempt,
                        "error": error.code,
                        "retry_in_s": round(pause, 3),
                    },
                )
                self._sleep(pause)
                continue
            latency_ms = (time.perf_counter() - started) * 1000.0
            return self._result(model, completion, attempt, latency_ms)

    def _timeout(self, deadline: Deadline) -> float:
        budget = deadline.remaining_s() - self._settings.deadline_margin_s
        if budget < MIN_CALL_S:
            raise DeadlineExceeded("not enough time left to call the model")
        return min(self._settings.model_timeout_s, budget)

    def _backoff(self, index: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**index)]."""
        cap = self._settings.model_backoff_cap_s
        return self._jitter() * min(cap, self._settings.model_backoff_base_s * 2**index)

    def _classify(self, exc: openai.APIError, attempt: int) -> tuple[StratusError, float | None]:
        """Map an SDK error to our error and, if retryable, the time to wait."""
        index = attempt - 1
        if isinstance(exc, openai.APITimeoutError):
            return ModelUnavailable("the model provider timed out"), self._backoff(index)
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnavailable("the model provider cannot be reached"), self._backoff(index)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            requested = retry_after_s(exc.response)
            if status == 429:
                headers = {"Retry-After": str(math.ceil(requested))} if requested else {}
                error: StratusError = ModelRateLimited(
                    "the model provider is rate limiting requests", headers=headers
                )
            elif status in (401, 403):
                return ModelAuthFailed("the model provider refused the API key"), None
            elif status >= 500 or status in RETRYABLE_STATUS:
                error = ModelProviderError(f"the model provider failed with HTTP {status}")
            else:
                return ModelRequestRejected(
                    f"the model provider rejected the request (HTTP {status})"
                ), None
            wait = requested if requested is not None else self._backoff(index)
            return error, wait
        return ModelProviderError("the model provider returned an unusable response"), None

    def _result(self, model: str, completion: Any, attempts: int, latency_ms: float) -> ChatResult:
        choice = completion.choices[0]
        fake = completion.system_fingerprint == FAKE_MODEL_FINGERPRINT
        if fake and not self._warned_fake:
            self._warned_fake = True
            logger.warning(
                "model replies come from the offline fake model server, not a real model"
            )
        return ChatResult(
            message=choice.message,
            model=model,
            response_model=completion.model or model,
            usage=Usage.from_openai(completion.usage),
            finish_reason=choice.finish_reason or "",
            attempts=attempts,
            latency_ms=latency_ms,
            fake_model=fake,
        )

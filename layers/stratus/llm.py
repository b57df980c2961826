"""The model client: one ``openai`` chat completion per call, with deadlines done right.

* Keys come from :class:`stratus.keys.KeyProvider` (the gateway picks one).
* Every request's timeout is cut to the time the Lambda has left, minus a
  margin to answer, so a slow provider can never make the function time out.
* It makes exactly one attempt: the SDK's own retries are off, and retrying is
  the gateway's (:mod:`stratus.gateway`), the one loop that owns the time budget.
  A failure says whether it may be retried and what ``Retry-After`` the provider
  asked for (:func:`retry_hint`).
* Usage is read from every response, and provider failures become stable
  Stratus errors (502/503/504 with a code), never a bare 500.

``openai`` is imported only here, and this module is only imported on paths
that call a model, which keeps cold starts of the other handlers small.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import openai
from openai.lib._parsing._completions import type_to_response_format_param
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
from stratus.llm_stream import StreamInterrupted, stream_completion, streamed_usage
from stratus.observability import logger
from stratus.usage import Usage

FAKE_MODEL_FINGERPRINT = "stratus-fake-model"
#: Below this many seconds a model call is not worth starting.
MIN_CALL_S = 1.0
#: Never wait longer than this on a provider's Retry-After.
MAX_RETRY_AFTER_S = 30.0
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryHint:
    """Whether a failed attempt may be retried, and the wait the provider asked for."""

    retryable: bool
    after_s: float | None = None


NO_RETRY = RetryHint(retryable=False)


def retry_hint(error: BaseException) -> RetryHint:
    """The hint :class:`ModelClient` attached to ``error`` (none: not retryable)."""
    hint = getattr(error, "retry_hint", None)
    return hint if isinstance(hint, RetryHint) else NO_RETRY


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
    """One chat completion per call, cut to the deadline; one instance per process."""

    def __init__(self, settings: Settings, keys: KeyProvider) -> None:
        self._settings = settings
        self._keys = keys
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

    def complete(
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
        on_delta: Callable[[str], None] | None = None,
    ) -> ChatResult:
        """One attempt at a chat completion with ``api_key`` (default: the first key).

        A provider failure is raised as a Stratus error carrying a :class:`RetryHint`;
        too little time left raises ``DeadlineExceeded`` without a request.
        """
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
        timeout = self._timeout(deadline or NoDeadline())
        started = time.perf_counter()
        try:
            if on_delta is None:
                completion = parse_completion(self._client(api_key), kwargs, timeout=timeout)
            else:  # streamed (stratus.llm_stream): the same completion, deltas as they come
                completion = stream_completion(self._client(api_key), kwargs, timeout, on_delta)
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
            error, hint = classify(exc)
            error.retry_hint = hint  # type: ignore[attr-defined]
            raise error from exc
        except StreamInterrupted as exc:  # before any text: retried like a dropped connection
            error = ModelUnavailable("the model's stream broke before any text")
            error.retry_hint = RetryHint(retryable=True)  # type: ignore[attr-defined]
            raise error from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        result = self._result(model, completion, latency_ms)
        estimate = streamed_usage(kwargs, completion) if on_delta is not None else None
        return result if estimate is None else replace(result, usage=estimate)

    def _timeout(self, deadline: Deadline) -> float:
        budget = deadline.remaining_s() - self._settings.deadline_margin_s
        if budget < MIN_CALL_S:
            raise DeadlineExceeded("not enough time left to call the model")
        return min(self._settings.model_timeout_s, budget)

    def _result(self, model: str, completion: Any, latency_ms: float) -> ChatResult:
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
            attempts=1,
            latency_ms=latency_ms,
            fake_model=fake,
        )


def parse_completion(client: openai.OpenAI, kwargs: dict[str, Any], *, timeout: float) -> Any:
    """``client.chat.completions.parse(**kwargs)``, sent :func:`untransformed`: the same
    request body, and the same parsed completion (an answer that does not match the
    ``response_format`` raises pydantic's ``ValidationError``, as the SDK does)."""
    completion = client.chat.completions.parse(**untransformed(kwargs), timeout=timeout)
    response_format = _model_format(kwargs)
    if response_format is not None:
        for choice in completion.choices:
            message = choice.message
            if message.content and not message.refusal:
                message.parsed = response_format.model_validate_json(message.content)
    return completion


def untransformed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the messages, and a ``response_format`` model's JSON-schema
    parameter, sent as ``extra_body``, which the SDK merges into the request body as it
    is, each key where the SDK's own would be.

    Given as ``messages=``, the SDK walks every message through its request-type
    transform, trying each member of the message union (about 0.5 ms of CPU per call
    for the triage agent's prompt), to rename and reformat fields: the chat message
    types declare none, so the walk returns what it was given. A ``response_format``
    model costs the SDK a strict JSON schema built from the class and walked the same
    way on every call; here it is built once per class (:func:`response_format_param`),
    an empty placeholder keeps its place in the body, and :func:`parse_completion`
    parses the answer as the SDK would. The request body is the same byte for byte
    (``tests/unit/test_llm_wire.py`` compares the two). Messages must be JSON-ready
    already, as the runtime's are (they come from JSON and go to the ledger as JSON).
    """
    sent = {**kwargs, "messages": []}
    extra: dict[str, Any] = {"messages": kwargs["messages"]}
    response_format = _model_format(kwargs)
    if response_format is not None:
        sent["response_format"] = {}
        extra["response_format"] = response_format_param(response_format)
    sent["extra_body"] = extra
    return sent


def _model_format(kwargs: dict[str, Any]) -> type[BaseModel] | None:
    """The call's ``response_format`` when it is a pydantic model (other formats, such as
    a dataclass or a ready-made dict, take the SDK's own path)."""
    response_format = kwargs.get("response_format")
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        return response_format
    return None


@functools.cache
def response_format_param(model: type[BaseModel]) -> Any:
    """The ``response_format`` body the SDK builds for ``model`` (a strict JSON schema),
    built once per class. Read only: the same object goes into every request."""
    return type_to_response_format_param(model)


def classify(exc: openai.APIError) -> tuple[StratusError, RetryHint]:
    """Map an SDK error to our error and whether (and after what wait) to retry."""
    retry = RetryHint(retryable=True)
    if isinstance(exc, openai.APITimeoutError):
        return ModelUnavailable("the model provider timed out"), retry
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable("the model provider cannot be reached"), retry
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        requested = retry_after_s(exc.response)
        retry = RetryHint(retryable=True, after_s=requested)
        if status == 429:
            headers = {"Retry-After": str(math.ceil(requested))} if requested else {}
            return ModelRateLimited(
                "the model provider is rate limiting requests", headers=headers
            ), retry
        if status in (401, 403):
            return ModelAuthFailed("the model provider refused the API key"), NO_RETRY
        if status >= 500 or status in RETRYABLE_STATUS:
            return ModelProviderError(f"the model provider failed with HTTP {status}"), retry
        return ModelRequestRejected(
            f"the model provider rejected the request (HTTP {status})"
        ), NO_RETRY
    return ModelProviderError("the model provider returned an unusable response"), NO_RETRY

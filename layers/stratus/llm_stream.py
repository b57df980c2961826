"""The streamed model call (issue 17): ``stream=True`` with usage in the stream.

:func:`stream_completion` is :meth:`stratus.llm.ModelClient.complete`'s streamed path. It
uses the ``openai`` stream helper (``chat.completions.stream``), which accumulates the
deltas into the same parsed completion the non-streamed call returns: the content, tool
calls put together from their argument deltas, structured output parsed and validated
against the agent's schema; the usage comes from the final chunk
(``stream_options={"include_usage": True}``). Every content delta is handed to
``on_delta(text)`` as it arrives.

Usage is never zero for tokens that were paid for:

* a stream that finishes without a usage chunk (a compatible server that ignores
  ``include_usage``) is given the runtime's estimate (:mod:`stratus.tokens`) of what was
  sent and received;
* a stream that breaks after text reached the caller raises :class:`StreamBroken`, which
  carries that estimate: it is not retried (the text cannot be unsent) and the gateway
  settles the reservation to it, once. A stream that breaks before any text is an
  ordinary retryable ``model_unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
from pydantic import ValidationError as PydanticValidationError

from stratus.errors import StratusError
from stratus.tokens import estimate_prompt_tokens, text_tokens
from stratus.usage import Usage

OnDelta = Callable[[str], None]


class StreamBroken(StratusError):
    """The model's stream broke after part of the answer reached the caller.

    ``usage`` is the estimate of what was sent and received; ``model`` the model asked.
    Not retried: the gateway settles the reservation to ``usage`` and the request fails
    with ``model_unavailable``.
    """

    code = "model_unavailable"
    status = 503

    def __init__(self, message: str, *, model: str, usage: Usage) -> None:
        super().__init__(message)
        self.model = model
        self.usage = usage


class _CallbackFailed(Exception):
    """``on_delta`` itself raised: its error is the caller's, re-raised unchanged."""


def estimate_usage(kwargs: dict[str, Any], received: str) -> Usage:
    """The runtime's estimate of a call's usage: the prompt's bound, the text's bound."""
    response_format = kwargs.get("response_format")
    schema = (
        response_format.model_json_schema()
        if isinstance(response_format, type) and hasattr(response_format, "model_json_schema")
        else None
    )
    prompt = estimate_prompt_tokens(kwargs.get("messages") or [], kwargs.get("tools") or (), schema)
    return Usage(input_tokens=prompt, output_tokens=text_tokens(received) if received else 0)


def _received(completion: Any) -> str:
    """Everything the model produced: content and tool-call arguments."""
    message = completion.choices[0].message if completion.choices else None
    if message is None:
        return ""
    parts = [message.content or ""]
    for call in message.tool_calls or []:
        function = getattr(call, "function", None)
        parts.append(f"{getattr(function, 'name', '')}{getattr(function, 'arguments', '')}")
    return "".join(parts)


class StreamInterrupted(Exception):
    """The stream broke before any text reached the caller (retryable, like a dropped
    connection: :mod:`stratus.llm` maps it to ``model_unavailable``)."""


def stream_completion(
    openai_client: openai.OpenAI,
    kwargs: dict[str, Any],
    timeout: float,
    on_delta: OnDelta,
) -> Any:
    """One streamed attempt: the parsed completion, as ``chat.completions.parse`` returns.

    Raises what ``parse`` raises (``openai`` errors, ``LengthFinishReasonError``, pydantic's
    ``ValidationError``) when no text reached the caller yet, :class:`StreamInterrupted`
    for a transport failure before any text, :class:`StreamBroken` for any failure after.
    """
    model = str(kwargs["model"])
    received: list[str] = []  # what reached the caller (and the tool deltas seen)

    def deliver(text: str) -> None:
        received.append(text)
        try:
            on_delta(text)
        except Exception as exc:
            raise _CallbackFailed() from exc

    try:
        with openai_client.chat.completions.stream(
            **kwargs, stream_options={"include_usage": True}, timeout=timeout
        ) as stream:
            for event in stream:
                if event.type == "content.delta" and event.delta:
                    deliver(event.delta)
                elif event.type == "tool_calls.function.arguments.delta":
                    received.append(event.arguments_delta)
            return stream.get_final_completion()
    except _CallbackFailed as failed:
        assert failed.__cause__ is not None
        raise failed.__cause__ from None
    except (openai.LengthFinishReasonError, PydanticValidationError):
        raise  # the answer is complete but unusable: the same error as a non-streamed call
    except Exception as exc:
        if received:  # text reached the caller: not retried, settled to the estimate
            raise StreamBroken(
                "the model's stream broke before the answer was complete",
                model=model,
                usage=estimate_usage(kwargs, "".join(received)),
            ) from exc
        if isinstance(exc, openai.APIError):
            raise
        raise StreamInterrupted(str(exc)) from exc


def streamed_usage(kwargs: dict[str, Any], completion: Any) -> Usage | None:
    """The estimate for a stream that ended without a usage chunk; None when it had one."""
    if completion.usage is not None:
        return None
    return estimate_usage(kwargs, _received(completion))


def replay_text(result: Any) -> str:
    """The text a ledger replay or a cache hit sends as its one delta (the JSON text of
    a structured answer)."""
    message = result.message
    content = getattr(message, "content", None)
    if content:
        return str(content)
    parsed = getattr(message, "parsed", None)
    if parsed is not None and hasattr(parsed, "model_dump_json"):
        return str(parsed.model_dump_json())
    return ""

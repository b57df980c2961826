"""LiteLLM's in-process ``Router``, the comparison point for Stratus's overhead.

``litellm`` is installed in the ``bench`` dependency group only (never a runtime
dependency). It is imported with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so it never
fetches its cost map from the network, with telemetry and every callback off, and
the router has one deployment: the offline fake model server as an
OpenAI-compatible endpoint (``openai/<model>`` at ``api_base``), no retries.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

#: The name the router's one deployment is called by.
ALIAS = "bench-model"


def version() -> str:
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _quiet_litellm() -> Any:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the import: no network
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = True
    litellm.callbacks = []
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.input_callback = []
    return litellm


def router_call(
    base_url: str,
    model: str,
    messages: list[dict[str, Any]],
    *,
    response_format: Any,
    max_completion_tokens: int,
) -> Callable[[], None]:
    """One ``Router.completion`` of the given request, as a no-argument callable."""
    litellm = _quiet_litellm()
    router = litellm.Router(
        model_list=[
            {
                "model_name": ALIAS,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": base_url,
                    "api_key": "sk-bench",
                },
            }
        ],
        num_retries=0,
    )

    def call() -> None:
        reply = router.completion(
            model=ALIAS,
            messages=messages,
            response_format=response_format,
            max_completion_tokens=max_completion_tokens,
        )
        if not reply.choices[0].message.content:
            raise RuntimeError("the LiteLLM router returned no content")

    return call

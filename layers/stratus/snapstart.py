"""Init-phase priming of agent functions, and what must be rebuilt after a SnapStart restore.

An agent function pays for ``openai``, its clients, its spec, prompt and the price
table once, in Lambda's init phase (which runs with a full CPU burst and, with
SnapStart, before anyone waits), instead of on its first request. The handler
module registers the hooks with :func:`register` and calls :func:`init_phase`
last; nothing here reads the environment when it is imported.

Who runs the before-snapshot hook (:func:`prime`):

* **SnapStart** (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``, a published
  version): Lambda's runtime, after the handler module is imported and before
  it takes the snapshot. :func:`init_phase` leaves it to the runtime.
* **On-demand or provisioned init in Lambda** (``$LATEST``, or any version
  without SnapStart: ``on-demand`` / ``provisioned-concurrency``): the runtime
  never calls the hooks, so :func:`init_phase` runs them from the module import,
  which is the init phase.
* **The local cloud** (``infra.local.lambda_worker``): the worker runs the
  registered hooks after importing the handler, as Lambda's init phase does, and
  counts them in ``init_ms``. Tests and scripts that import the module with no
  such variable run nothing.

Priming is idempotent per runtime (a second call is a no-op) and makes no
request that needs a credential: no Secrets Manager, no DynamoDB, no model
call. A failure to prime is logged and swallowed: the request path builds what
it needs on first use and answers errors in the API's shape, so a function with
a misconfiguration still answers ``{"error": ...}`` instead of failing its init.

After a restore (:func:`after_restore`), randomness is re-seeded (every restored
copy of one snapshot would otherwise draw the same jitter) and everything that
holds a connection or a credential is rebuilt: a new runtime with a fresh boto3
session (credentials are resolved again; the loaded service models are kept)
and new model HTTP clients, then primed again (the imports are already done).
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import snapshot_restore_py
from pydantic import BaseModel

from stratus import composition, fanout
from stratus.observability import logger

if TYPE_CHECKING:
    from stratus.agents import AgentSpec
    from stratus.aws import AwsClients

#: Loads the served agent's spec by name (handlers pass ``functions.agents.load_agent``;
#: the layer never imports ``functions``).
SpecLoader = Callable[[str], "AgentSpec"]
#: ``AWS_LAMBDA_INITIALIZATION_TYPE`` values whose init phase never runs the hooks.
RUNTIME_SKIPS_HOOKS = frozenset({"on-demand", "provisioned-concurrency"})
SNAP_START = "snap-start"
#: Placeholder key of the priming calls (answered on the loopback interface).
PRIMING_KEY = "sk-stratus-priming-not-a-key"

#: How many callables the priming wave runs (the gateway's widest wave is smaller).
WAVE_THREADS = 8

_lock = threading.RLock()
#: The runtime the last successful :func:`prime` warmed (None: not primed).
_primed: composition.Runtime | None = None
#: Agents whose SDK path was warmed in this process (module state: survives a restore).
_sdk_warmed: set[str] = set()
#: Extra warmers registered by the handler (e.g. its routes), run after :func:`warm`.
_warmers: list[Callable[[composition.Runtime], None]] = []


def register(load_spec: SpecLoader, *warmers: Callable[[composition.Runtime], None]) -> None:
    """Register :func:`prime` (before snapshot) and :func:`after_restore` once per process.

    ``warmers`` run after the runtime is warmed, with it (a handler warms its own
    routes); each must make no request that needs a credential.
    """
    for warmer in warmers:
        if warmer not in _warmers:
            _warmers.append(warmer)
    registries: tuple[tuple[list[Any], Callable[[SpecLoader], Any]], ...] = (
        (snapshot_restore_py.get_before_snapshot(), prime),
        (snapshot_restore_py.get_after_restore(), after_restore),
    )
    for hooks, func in registries:
        entry: tuple[Any, ...] = (func, (load_spec,), {})
        if entry not in hooks:
            hooks.append(entry)


def init_phase() -> bool:
    """Run the before-snapshot hooks now if Lambda's runtime will not (see the module doc).

    Returns whether it ran them. Reads only Lambda's own ``AWS_LAMBDA_INITIALIZATION_TYPE``,
    which nothing but a Lambda init phase sets.
    """
    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") not in RUNTIME_SKIPS_HOOKS:
        return False
    run_hooks(snapshot_restore_py.get_before_snapshot())
    return True


def run_hooks(hooks: list[Any]) -> None:
    """Call registered hooks as the runtime does: ``(func, args, kwargs)`` entries, in order."""
    for entry in list(hooks):
        func, args, kwargs = entry if isinstance(entry, tuple) else (entry, (), {})
        func(*args, **kwargs)


def primed() -> bool:
    """Whether the process's current runtime has been primed."""
    with _lock:
        return _primed is not None and _primed is composition.current()


def prime(load_spec: SpecLoader) -> bool:
    """Build and warm the process's runtime for the agent it serves; False if it could not.

    The platform function (no agent) only builds its runtime (settings): it never
    imports ``openai``.
    """
    global _primed
    with _lock:
        started = time.perf_counter()
        try:
            runtime = composition.current()  # settings are validated here
            if _primed is runtime:
                return True
            warmed = warm(runtime, load_spec)
            for warmer in list(_warmers):
                warmer(runtime)
                warmed.append(getattr(warmer, "__name__", "warmer"))
        except Exception as exc:  # priming is an optimisation: the request path reports
            logger.warning("priming failed", extra={"error": repr(exc)})
            return False
        _primed = runtime
        freeze_heap()
        logger.debug(
            "primed",
            extra={"warmed": warmed, "ms": round((time.perf_counter() - started) * 1000.0, 1)},
        )
        return True


def freeze_heap() -> None:
    """Move every object the init built into the collector's permanent generation.

    Imports and priming leave hundreds of thousands of long-lived objects (modules,
    classes, service models, schemas); without this, the collector walks all of them
    on each full collection, which then costs a request 100 ms or more, and on the
    first requests' younger collections too. Frozen objects are never collected:
    cyclic garbage the init already left stays (no ``gc.collect()`` first, which would
    add its own 100 ms to an on-demand init). Idempotent; after a SnapStart restore it
    freezes what the rebuild added.
    """
    gc.freeze()


def warm(runtime: composition.Runtime, load_spec: SpecLoader) -> list[str]:
    """What :func:`prime` builds, in order; returns the names of what it warmed."""
    settings = runtime.settings
    if not settings.agent:
        return ["settings"]
    spec = load_spec(settings.agent)
    _ = spec.system_prompt  # the prompt file
    runtime.release_for(spec)  # STRATUS_RELEASE, or the hash of the agent's files
    warmed = ["settings", "spec", "prompt", "release"]
    runtime.prices.price_for(settings.model_for(spec.tier))
    warmed.append("prices")
    if spec.output_schema is not None:  # part of every structured call's request hash
        from stratus.ledger import json_schema

        json_schema(spec.output_schema)
        warmed.append("output_schema")
    _ = runtime.flags  # the flag source (an AppConfig store and its client: no request)
    warmed.append("flags")
    # openai, the gateway and its stores (AWS clients created; no request is made).
    runtime.invoke_service(spec)
    warmed.append("invoke_service")
    if spec.sessions is not None and settings.sessions_table:
        runtime.session_messages(spec)
        warmed.append("session_service")
    warmed.append(_warm_model_client(runtime))
    # The gateway's waves run on a process-wide pool: start its threads now (a
    # SnapStart snapshot keeps them; they hold no connection).
    fanout.run_all([_nothing] * WAVE_THREADS)
    warmed.append("wave_threads")
    if spec.name not in _sdk_warmed:
        warm_sdk(spec, settings.model_for(spec.tier))
        _sdk_warmed.add(spec.name)
        warmed.append("sdk_round_trip")
    return warmed


def _nothing() -> None:
    return None


def warm_sdk(spec: AgentSpec, model: str) -> None:
    """Two ``chat.completions.parse`` calls, answered on the loopback interface by
    :class:`stratus.priming_model.PrimingModel`: no key, no cost, nothing leaves the
    machine, and the connection is closed again.

    The first sends the agent's prompt, tools and output schema and is answered with
    a refusal (nothing is validated against the agent's schema); the second asks for
    a tiny schema of its own and gets content, so the path that parses structured
    output is built too. Together they build what the SDK and its HTTP stack build
    lazily on a first call: the request and its JSON schemas, the connection, the
    HTTP/1.1 exchange, the completion models and the parsed-output adapter.
    """
    import encodings.idna  # noqa: F401  (what the first connection's getaddrinfo loads)

    import httpx2
    import openai

    from stratus.llm import parse_completion
    from stratus.priming_model import TIMEOUT_S, PrimingModel

    kwargs: dict[str, Any] = {}
    tools = [
        openai.pydantic_function_tool(t.args, name=t.name, description=t.description)
        for t in spec.tools
    ]
    if tools:
        kwargs["tools"] = tools
    if spec.output_schema is not None:
        kwargs["response_format"] = spec.output_schema
    messages: list[Any] = [
        {"role": "system", "content": spec.system_prompt},
        {"role": "user", "content": "priming"},
    ]
    with (
        PrimingModel(partial(_priming_completion, model)) as endpoint,
        # Plain HTTP to 127.0.0.1: no TLS, so no certificate store to load for it.
        httpx2.Client(verify=False) as http,
        openai.OpenAI(
            api_key=PRIMING_KEY, base_url=endpoint.base_url, max_retries=0, http_client=http
        ) as client,
    ):
        # Sent as stratus.llm sends a call (the messages and schema as extra_body, a
        # number as timeout), and parsed as it parses one.
        first = {"model": model, "messages": messages, "max_completion_tokens": 16, **kwargs}
        parse_completion(client, first, timeout=TIMEOUT_S)
        second = {**first, "response_format": _Primed}
        second.pop("tools", None)
        parsed = parse_completion(client, second, timeout=TIMEOUT_S)
    if endpoint.answered != 2 or parsed.choices[0].message.parsed != _Primed(primed=True):
        raise RuntimeError("the priming calls were not answered as sent")


class _Primed(BaseModel):
    """The second priming call's output schema (its answer parses into it)."""

    primed: bool


def _priming_completion(model: str, request: dict[str, Any]) -> dict[str, Any]:
    """A refusal, or ``{"primed": true}`` when the request asks for :class:`_Primed`."""
    response_format = request.get("response_format") or {}
    schema_name = (response_format.get("json_schema") or {}).get("name")
    content = '{"primed": true}' if schema_name == _Primed.__name__ else None
    return {
        "id": "chatcmpl-stratus-priming",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "system_fingerprint": "stratus-priming",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None if content else "priming",
                    "annotations": [],
                },
            }
        ],
        "service_tier": "default",
        # The shape providers answer with: the usage details build models of their own.
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }


def _warm_model_client(runtime: composition.Runtime) -> str:
    """Create the model HTTP client, or, if its key is in Secrets Manager, load the SDK.

    Fetching the secret needs the function's credential, which must not be baked
    into a snapshot: without a local key a throwaway client loads the SDK's lazy
    modules (the chat resources, the HTTP transport) and is closed again.
    """
    import openai

    settings = runtime.settings
    if settings.openai_api_key:
        # The key is local: the real client (no request); its chat resources load lazily.
        _ = runtime.model_client._client().chat.completions
        return "model_client"
    base_url = settings.openai_base_url
    client = openai.OpenAI(
        api_key=PRIMING_KEY, base_url=str(base_url) if base_url else None, max_retries=0
    )
    _ = client.chat.completions
    client.close()
    return "openai_sdk"


def after_restore(load_spec: SpecLoader) -> None:
    """After a SnapStart restore: re-seed, rebuild connections and credentials, prime again."""
    global _primed
    random.seed()  # from os.urandom; uuid4 and secrets read os.urandom themselves
    with _lock:
        old = composition.current()
        composition.install(
            composition.Runtime(
                old.settings,
                clients=fresh_clients(old.clients),
                clock=old.clock,
                sleep=old.sleep,
            )
        )
        _primed = None
    prime(load_spec)


def fresh_clients(old: AwsClients) -> AwsClients:
    """New AWS clients on a new session (credentials resolved again), keeping the
    service models the old session already loaded (no JSON parsed twice)."""
    import boto3
    import botocore.session

    from stratus.aws import AwsClients

    core = botocore.session.get_session()
    old_core = getattr(old.session, "_session", None)
    if old_core is not None:
        core.register_component("data_loader", old_core.get_component("data_loader"))
    return AwsClients(boto3.session.Session(botocore_session=core))


def forget() -> None:
    """Forget that the process was primed (tests)."""
    global _primed
    with _lock:
        _primed = None

"""An offline, OpenAI-compatible fake model server.

The test suite, the benchmarks and the local demo need "a model" that answers
instantly, costs nothing, never needs a network or a key, and behaves the same
on every run. Mocking the ``openai`` client would skip the parts that break in
practice (HTTP status handling, retries, ``Retry-After``, timeouts, streaming,
the parsing of typed responses), so this is a *real* HTTP server on loopback,
spoken to by the real ``openai`` client through ``base_url``.

What it answers, in order:

1. **Injected faults** (:class:`Fault`): an HTTP error (429, 500, 503, ...),
   optionally with ``Retry-After`` and/or a delay, for a number of requests,
   optionally only for one model or one API key. This is how retry, fallback,
   timeout and budget logic is exercised without a flaky network.
2. **Scripted replies** (:class:`Reply`), consumed first in, first out, for
   tests that need an exact answer.
3. **Deterministic defaults**: structured output that validates against the
   requested JSON schema, a tool call with generated arguments when tools are
   offered, or a short text that echoes the conversation.

Token usage is computed by a fixed rule that simulates the provider's
tokenizer (``usage.simulated_provider_tokens``: about four characters a token),
with prompt caching and reasoning tokens modelled the way OpenAI reports them,
so cost accounting can be tested exactly.

It never pretends to be a real model: every completion carries
``system_fingerprint == "stratus-fake-model"`` and the header
``X-Stratus-Fake-Model: true``, default text replies start with
``[fake model] ``, and a banner is logged on start.

Run it on its own (for the local cloud or the demo) with::

    python -m infra.local.fake_model --host 127.0.0.1 --port 8787

and drive it from another process through the ``/_fake/*`` admin endpoints.

Modules: ``markers`` (how it says it is fake), ``faults``, ``validation``,
``schema_faker``, ``usage`` (token counts), ``completion`` (the answers),
``httpd`` (the HTTP layer) and ``server`` (:class:`FakeModelServer`, ``main``).
"""

from infra.local.fake_model.completion import Reply
from infra.local.fake_model.faults import Fault
from infra.local.fake_model.markers import BANNER, FAKE_HEADER, FINGERPRINT, MODELS, TEXT_PREFIX
from infra.local.fake_model.server import FakeModelServer, RecordedRequest, main
from infra.local.fake_model.usage import prompt_segments, simulated_provider_tokens

#: The former private name, still imported by a test of the gateway's prompt bound.
_prompt_segments = prompt_segments

__all__ = [
    "BANNER",
    "FAKE_HEADER",
    "FINGERPRINT",
    "MODELS",
    "TEXT_PREFIX",
    "FakeModelServer",
    "Fault",
    "RecordedRequest",
    "Reply",
    "main",
    "prompt_segments",
    "simulated_provider_tokens",
]

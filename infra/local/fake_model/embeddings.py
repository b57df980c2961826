"""``POST /v1/embeddings`` of the fake model: deterministic vectors that put similar texts close.

An embedding is hashed word features, not meaning: every lowercase word (unigram) and
every pair of neighbouring words (bigram) of the text adds a signed weight to one of
``dimensions`` buckets (BLAKE2b of the feature picks the bucket and the sign), and the
vector is L2-normalised. Texts that share words share buckets, so their cosine similarity
is high; unrelated texts are near orthogonal. The same text always gives the same vector,
on every machine, which makes recall tests deterministic offline. It is not a real model:
the reply carries the fake model's ``system_fingerprint`` and ``X-Stratus-Fake-Model``.

The request is checked like OpenAI checks it (``model``; ``input`` a non-empty string or
a non-empty array of them, at most 2048; ``dimensions`` an integer 1..:data:`MAX_DIMENSIONS`;
``encoding_format`` ``float`` or ``base64``, which the ``openai`` client asks for by
default), and ``usage`` counts the input with the simulated provider tokenizer.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
from array import array
from typing import TYPE_CHECKING, Any

from infra.local.fake_model.markers import FINGERPRINT
from infra.local.fake_model.usage import simulated_provider_tokens
from infra.local.fake_model.validation import BadRequest

if TYPE_CHECKING:
    from infra.local.fake_model.httpd import FakeHandler
    from infra.local.fake_model.server import FakeModelServer, RecordedRequest

EMBEDDINGS_PATH = "/v1/embeddings"
DEFAULT_DIMENSIONS = 1536  # text-embedding-3-small's native size
MAX_DIMENSIONS = 3072  # text-embedding-3-large's
MAX_INPUTS = 2048
BIGRAM_WEIGHT = 0.5
WORD = re.compile(r"[^\W_]+")


def features(text: str) -> list[tuple[str, float]]:
    """The weighted features of a text: its words and its neighbouring word pairs."""
    words = WORD.findall(text.lower())
    found = [(f"w:{word}", 1.0) for word in words]
    found.extend((f"b:{a} {b}", BIGRAM_WEIGHT) for a, b in itertools.pairwise(words))
    return found


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The fake embedding of ``text``: unit length (a text without words: the first axis)."""
    vector = [0.0] * dimensions
    for feature, weight in features(text):
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        number = int.from_bytes(digest, "big")
        vector[number % dimensions] += -weight if number >> 63 else weight
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]


def validate_embeddings_body(body: Any) -> dict[str, Any]:
    """Reject what OpenAI would reject with 400."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise BadRequest(
            "'input' must be a non-empty string or a non-empty array of non-empty strings.",
            "input",
        )
    if len(texts) > MAX_INPUTS:
        raise BadRequest(f"'input' must have at most {MAX_INPUTS} items.", "input")
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    if dimensions is None:
        dimensions = DEFAULT_DIMENSIONS
    if (
        not isinstance(dimensions, int)
        or isinstance(dimensions, bool)
        or not 1 <= dimensions <= MAX_DIMENSIONS
    ):
        raise BadRequest(f"'dimensions' must be an integer 1..{MAX_DIMENSIONS}.", "dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return {**body, "input": texts, "dimensions": dimensions, "encoding_format": encoding}


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    packed = array("f", vector)
    if packed.itemsize != 4:  # pragma: no cover - every CPython platform has 4-byte floats
        raise RuntimeError("float32 is not 4 bytes here")
    return base64.b64encode(packed.tobytes()).decode("ascii")  # little-endian hosts only


def embeddings_json(body: dict[str, Any]) -> dict[str, Any]:
    """The response to a validated request, in OpenAI's shape (plus the fake marker)."""
    texts: list[str] = body["input"]
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _encoded(embed(text, body["dimensions"]), body["encoding_format"]),
        }
        for i, text in enumerate(texts)
    ]
    tokens = sum(simulated_provider_tokens(text) for text in texts)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "system_fingerprint": FINGERPRINT,
    }


def _take_named_fault(server: FakeModelServer, model: str | None, api_key: str | None) -> Any:
    with server._lock:
        for slot in server._faults:
            fault = slot.fault
            if slot.remaining != 0 and fault.model is not None and fault.matches(model, api_key):
                if slot.remaining > 0:
                    slot.remaining -= 1
                return fault
    return None


def handle_embeddings(
    server: FakeModelServer, http: FakeHandler, raw: bytes, recorded: type[RecordedRequest]
) -> None:
    """Answer one ``POST /v1/embeddings`` (recorded like chat completions).

    A fault applies to an embeddings request only when it names the embedding model
    (``Fault(model="text-embedding-3-small", ...)``), so faults meant for chat models
    keep hitting chat completions.
    """
    api_key = http.api_key()
    body: Any = None
    problem: BadRequest | None = None
    try:
        body = json.loads(raw) if raw.strip() else None
        if body is None:
            problem = BadRequest("We could not parse the JSON body of your request: empty.")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problem = BadRequest(f"We could not parse the JSON body of your request: {error}.")
    model = body.get("model") if isinstance(body, dict) else None
    record = server._record(
        recorded("POST", EMBEDDINGS_PATH, model if isinstance(model, str) else None, api_key, body)
    )
    try:
        if api_key is None:
            server._settle(record, 401)
            server._send_unauthorized(http)
            return
        if problem is None:
            try:
                body = validate_embeddings_body(body)
            except BadRequest as error:
                problem = error
        if problem is not None:
            server._settle(record, 400)
            http.send_error_json(400, problem.message, param=problem.param)
            return
        fault = _take_named_fault(server, record.model, api_key)
        if fault is not None and fault.status != 200:
            server._settle(record, fault.status)
            server._send_fault(http, fault)
            return
        if fault is not None and fault.delay_s:
            server._stopping.wait(fault.delay_s)
        http.send_json(server._settle(record, 200), embeddings_json(body))
    finally:
        if record.status is None:
            server._settle(record, 500)
        server._log_request(record)

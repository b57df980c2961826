"""The fake model's ``POST /v1/embeddings`` (issue 18) through the real ``openai`` client:
deterministic, unit-length vectors of the asked dimension that put similar texts closer
than unrelated ones, usage, the fake marker, OpenAI-like 400s, and faults by model only."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from infra.local.fake_model import FINGERPRINT, FakeModelServer, Fault
from infra.local.fake_model.embeddings import EMBEDDINGS_PATH, embed
from infra.local.fake_model.markers import FAKE_HEADER

KEY = "sk-test-key"
MODEL = "text-embedding-3-small"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer(quiet=True) as running:
        yield running


@pytest.fixture
def client(server: FakeModelServer) -> Iterator[openai.OpenAI]:
    server.reset()
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as c:
        yield c


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def vectors(client: openai.OpenAI, texts: list[str], dimensions: int = 256) -> list[list[float]]:
    result = client.embeddings.create(model=MODEL, input=texts, dimensions=dimensions)
    return [item.embedding for item in sorted(result.data, key=lambda d: d.index)]


def test_similar_texts_are_closer_than_unrelated_ones(client: openai.OpenAI) -> None:
    fact, same, other = vectors(
        client,
        [
            "The customer prefers email over phone calls",
            "customer prefers email",
            "Quarterly revenue grew in the northern warehouse",
        ],
    )
    assert cosine(fact, same) > 0.5
    assert abs(cosine(fact, other)) < 0.2
    assert cosine(fact, same) > cosine(fact, other) + 0.4


def test_vectors_are_deterministic_unit_length_and_honour_dimensions(
    client: openai.OpenAI,
) -> None:
    (first,) = vectors(client, ["Ship it to Berlin"], dimensions=64)
    (again,) = vectors(client, ["ship it to berlin!"], dimensions=64)  # case, punctuation
    assert len(first) == 64
    assert first == pytest.approx(again, abs=1e-6)  # float32 over the wire
    assert math.sqrt(sum(x * x for x in first)) == pytest.approx(1.0, abs=1e-5)
    assert first == pytest.approx(embed("Ship it to Berlin", 64), abs=1e-6)
    (wide,) = vectors(client, ["Ship it to Berlin"], dimensions=1024)
    assert len(wide) == 1024


def test_float_encoding_usage_and_the_fake_marker(server: FakeModelServer) -> None:
    server.reset()
    body = {"model": MODEL, "input": "abcdefgh", "dimensions": 8, "encoding_format": "float"}
    status, headers, reply = post(server, body)
    assert status == 200
    assert headers[FAKE_HEADER] == "true"
    assert reply["system_fingerprint"] == FINGERPRINT
    assert reply["object"] == "list" and reply["model"] == MODEL
    assert reply["usage"] == {"prompt_tokens": 2, "total_tokens": 2}  # 8 chars: 2 tokens
    assert reply["data"][0]["embedding"] == pytest.approx(embed("abcdefgh", 8))
    assert server.call_count(path=EMBEDDINGS_PATH) == 1


def test_usage_counts_every_input(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input=["abcd", "abcdefghi"], dimensions=4)
    assert result.usage.prompt_tokens == 1 + 3
    assert result.usage.total_tokens == 4


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": ""}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ["ok", 3]}, "input"),
        ({"model": MODEL, "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": MODEL, "input": "x", "dimensions": "256"}, "dimensions"),
        ({"model": MODEL, "input": "x", "dimensions": 5000}, "dimensions"),
        ({"model": MODEL, "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_bad_requests_are_400_with_the_param(
    server: FakeModelServer, body: dict[str, Any], param: str
) -> None:
    status, _, reply = post(server, body)
    assert status == 400
    assert reply["error"]["param"] == param
    assert reply["error"]["type"] == "invalid_request_error"


def test_no_key_is_401(server: FakeModelServer) -> None:
    status, _, reply = post(server, {"model": MODEL, "input": "x"}, key=None)
    assert status == 401
    assert reply["error"]["code"] == "invalid_api_key"


def test_faults_hit_embeddings_only_when_they_name_the_model(
    server: FakeModelServer, client: openai.OpenAI
) -> None:
    server.inject(Fault(status=500, times=1))  # any model: meant for chat completions
    vectors(client, ["still answered"])
    server.reset()
    server.inject(Fault(status=429, times=1, model=MODEL))
    with pytest.raises(openai.RateLimitError):
        vectors(client, ["limited"])
    vectors(client, ["then answered"])


def post(
    server: FakeModelServer, body: dict[str, Any], key: str | None = KEY
) -> tuple[int, Any, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        server.url.removesuffix("/v1") + EMBEDDINGS_PATH,
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())

"""Test doubles for long-term memory: a deterministic embedder (hashed words, like the
offline fake model's) and a store that records every filter it was asked."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from stratus.agents import CallScope
from stratus.deadline import Deadline
from stratus.gateway_embeddings import EmbeddingResult
from stratus.memory.fake import MemoryVectorStore
from stratus.memory.store import Match
from stratus.prices import load_price_table
from stratus.usage import Usage

WORD = re.compile(r"[a-z0-9]+")


def hashed(text: str, dimension: int) -> list[float]:
    """Hashed word unigrams and bigrams, L2-normalised: similar texts land close."""
    words = WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    vector = [0.0] * dimension
    for gram in grams:
        digest = hashlib.sha256(gram.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dimension] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    if norm == 1.0 and not any(vector):
        vector[0] = 1.0
    return [x / norm for x in vector]


class HashEmbedder:
    """An :class:`~stratus.gateway_embeddings.Embedder` without a network; records calls."""

    def __init__(self, dimension: int = 64, model: str = "text-embedding-3-small") -> None:
        self.dimension = dimension
        self.model = model
        self.calls: list[dict[str, Any]] = []
        self._prices = load_price_table()

    def embed(
        self,
        texts: Sequence[str],
        *,
        scope: CallScope | None,
        step: str,
        agent: str,
        deadline: Deadline | None = None,
    ) -> EmbeddingResult:
        self.calls.append({"texts": list(texts), "scope": scope, "step": step, "agent": agent})
        usage = Usage(input_tokens=sum(len(t.split()) + 1 for t in texts))
        return EmbeddingResult(
            vectors=[hashed(t, self.dimension) for t in texts],
            model=self.model,
            usage=usage,
            cost_usd=self._prices.cost(self.model, usage),
            fake_model=True,
        )


class RecordingStore(MemoryVectorStore):
    """The fake store, recording every query's filter."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters: list[Mapping[str, Any]] = []

    def query(
        self, vector: Sequence[float], *, top_k: int, filter: Mapping[str, Any]
    ) -> list[Match]:
        self.filters.append(filter)
        return super().query(vector, top_k=top_k, filter=filter)


def cost(model: str, tokens: int) -> Decimal:
    return load_price_table().cost(model, Usage(input_tokens=tokens))

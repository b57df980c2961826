"""``MemoryService``: remember, search, forget and delete memories of one owner.

An owner (:class:`~stratus.memory.store.Owner`) is the authenticated tenant and end
customer; every operation is confined to it: vector keys carry the tenant, every query
filters on tenant and customer (and ``expires_at`` after now), and every result is
checked again against the owner before it is returned (a store that ignored the filter
still could not leak). Memory ids are content hashes (``sha256(owner, kind, text)``,
32 hex), so a retried write replaces instead of duplicating; a session's summary has
one id per session, replaced whenever it is written.

Round trips (S3 Vectors requests, plus the embedding call's two DynamoDB waves):
``remember``: embed + 1 ``PutVectors``; ``search``: embed + 1 ``QueryVectors``;
``delete``: 1 ``GetVectors`` + 1 ``DeleteVectors``; ``forget``: one ``ListVectors``
per 1,000 vectors of the index + one ``DeleteVectors`` per 500 of the owner's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stratus.agents import CallScope
from stratus.config import Settings
from stratus.deadline import Deadline
from stratus.errors import MemoryNotFound
from stratus.gateway_embeddings import Embedder, EmbeddingResult
from stratus.memory.store import (
    MEMORY_ID,
    NO_CUSTOMER,
    Kind,
    Owner,
    Vector,
    VectorStore,
    memory_id_of,
    score,
)

#: The agent name the API's search is billed and budgeted as.
MEMORY_AGENT = "memory"
#: Longest text a memory keeps when no policy says otherwise.
DEFAULT_MAX_CHARS = 1_000


def memory_id(owner: Owner, kind: str, text: str) -> str:
    """A memory's id: the hash of its owner, kind and text (a retry replaces it)."""
    digest = hashlib.sha256(f"{owner.tenant_id}\n{owner.customer_id}\n{kind}\n{text}".encode())
    return digest.hexdigest()[:32]


def summary_id(tenant_id: str, agent: str, session_id: str) -> str:
    """The one ``summary`` memory of a session."""
    digest = hashlib.sha256(f"{tenant_id}\nsummary\n{agent}\n{session_id}".encode())
    return digest.hexdigest()[:32]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Memory:
    """One memory as the API and the tools show it."""

    id: str
    text: str
    kind: str
    agent: str
    customer_id: str
    session_id: str | None
    created_at: int
    expires_at: int
    score: float | None = None

    @classmethod
    def of(cls, key: str, metadata: dict[str, Any], score: float | None = None) -> Memory:
        session = str(metadata.get("session_id") or NO_CUSTOMER)
        return cls(
            id=memory_id_of(key),
            text=str(metadata.get("text") or ""),
            kind=str(metadata.get("kind") or ""),
            agent=str(metadata.get("agent") or ""),
            customer_id=str(metadata.get("customer_id") or NO_CUSTOMER),
            session_id=None if session == NO_CUSTOMER else session,
            created_at=int(metadata.get("created_at") or 0),
            expires_at=int(metadata.get("expires_at") or 0),
            score=score,
        )

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "kind": self.kind,
            "agent": self.agent,
            "user": None if self.customer_id == NO_CUSTOMER else self.customer_id,
            "session_id": self.session_id,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
        }
        if self.score is not None:
            view["score"] = round(self.score, 6)
        return view


@dataclass(frozen=True)
class Found:
    """A search's memories (best first) and the embedding call it made."""

    memories: list[Memory]
    embedding: EmbeddingResult


class MemoryService:
    """The memories of a stage's index, confined to one owner per call."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self._settings = settings
        self._clock = clock

    @property
    def ttl_s(self) -> int:
        return self._settings.memory_ttl_s

    def remember(
        self,
        owner: Owner,
        texts: Sequence[str],
        *,
        kind: Kind,
        agent: str,
        scope: CallScope | None,
        step: str,
        session_id: str | None = None,
        ids: Sequence[str] | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        deadline: Deadline | None = None,
    ) -> tuple[list[str], EmbeddingResult | None]:
        """Store ``texts`` (one embedding call, one ``PutVectors``); their ids."""
        cleaned = [t.strip()[:max_chars] for t in texts if t and t.strip()]
        if not cleaned:
            return [], None
        keys = list(ids) if ids is not None else [memory_id(owner, kind, t) for t in cleaned]
        embedded = self.embedder.embed(
            cleaned, scope=scope, step=step, agent=agent, deadline=deadline
        )
        now = int(self._clock())
        metadata = {
            "tenant_id": owner.tenant_id,
            "customer_id": owner.customer_id,
            "agent": agent,
            "kind": kind,
            "session_id": session_id or NO_CUSTOMER,
            "created_at": now,
            "expires_at": now + self.ttl_s,
        }
        self.store.put(
            [
                Vector(owner.key(mid), data, {**metadata, "text": text})
                for mid, text, data in zip(keys, cleaned, embedded.vectors, strict=True)
            ]
        )
        return keys, embedded

    def search(
        self,
        owner: Owner,
        query: str,
        *,
        limit: int,
        scope: CallScope | None,
        step: str,
        agent: str,
        min_score: float = 0.0,
        deadline: Deadline | None = None,
    ) -> Found:
        """The owner's ``limit`` live memories closest to ``query`` (best first)."""
        embedded = self.embedder.embed(
            [query], scope=scope, step=step, agent=agent, deadline=deadline
        )
        now = self._clock()
        found = self.store.query(embedded.vectors[0], top_k=limit, filter=owner.filter(now))
        memories = [
            Memory.of(m.key, m.metadata, score(self.store.distance, m.distance))
            for m in found
            if owner.owns(m) and float(m.metadata.get("expires_at", 0)) > now
        ]
        return Found([m for m in memories if (m.score or 0) >= min_score][:limit], embedded)

    def find(
        self,
        owner: Owner,
        query: str | None,
        *,
        limit: int,
        request_id: str,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/memory``: the owner's memories closest to ``query`` (best first; one
        embedding call billed to the request as agent ``memory``, one ``QueryVectors``),
        or without a query the newest ``limit`` (a listing of the index)."""
        if query is None:
            now = self._clock()
            live = [
                Memory.of(v.key, v.metadata)
                for v in self.store.scan()
                if owner.owns(v) and float(v.metadata.get("expires_at", 0)) > now
            ]
            live.sort(key=lambda m: (-m.created_at, m.id))
            return {"memories": [m.to_json() for m in live[:limit]], "usage": {}, "cost_usd": 0.0}
        scope = CallScope(
            tenant_id=owner.tenant_id,
            agent=MEMORY_AGENT,
            kind="request",
            scope_id=request_id,
            replayable=False,
        )
        found = self.search(
            owner,
            query,
            limit=limit,
            scope=scope,
            step="search",
            agent=MEMORY_AGENT,
            deadline=deadline,
        )
        return {
            "memories": [m.to_json() for m in found.memories],
            "usage": found.embedding.usage.model_dump(),
            "cost_usd": float(found.embedding.cost_usd),
            "fake_model": found.embedding.fake_model,
        }

    def forget(self, owner: Owner) -> int:
        """Delete every vector of the owner (expired ones too); how many."""
        keys = [v.key for v in self.store.scan() if owner.owns(v)]
        if keys:
            self.store.delete(keys)
        return len(keys)

    def delete(self, tenant_id: str, memory_id: str, *, customer_id: str | None = None) -> Memory:
        """Delete one memory of the tenant (of ``customer_id`` only, when given: a key
        bound to an end customer); ``MemoryNotFound`` for an unknown, expired or
        another tenant's or customer's id."""
        missing = MemoryNotFound(f"no memory {memory_id!r}", details={"memory_id": memory_id})
        if not MEMORY_ID.match(memory_id):
            raise missing
        key = f"{tenant_id}#{memory_id}"
        found = [v for v in self.store.get([key]) if v.key == key]
        if not found:
            raise missing
        meta = found[0].metadata
        if meta.get("tenant_id") != tenant_id or (
            customer_id is not None and meta.get("customer_id") != customer_id
        ):
            raise missing
        if float(meta.get("expires_at", 0)) <= self._clock():
            raise missing
        self.store.delete([key])
        return Memory.of(key, meta)

"""Long-term memory on the request path: recall latency, cost and prompt tokens per turn.

A turn of an agent with memory recalls before its first model call: one embedding call
of the user text through the gateway (the gateway's two sequential DynamoDB round trips,
reserve and settle, as for any model call, plus the provider request) and one
``QueryVectors`` (filtered on tenant, customer and ``expires_at``). This section seeds an
index with 1,000 and 10,000 memories (100 and 1,000 end customers, ten memories each),
then recalls for one customer per query and times the two parts: the embedding request
to the offline fake model over real HTTP (its hashed-word embeddings, 256 dimensions),
and ``QueryVectors`` on moto in-process with the local front's exact search
(:mod:`infra.local.moto_vectors`). On AWS the query is S3 Vectors' approximate search
(sub-second, documented) and the embedding a provider round trip; locally the query is
an exact scan of every vector, so its time grows with the index (AWS's does not, much).
*prompt tokens* is the estimate (:mod:`stratus.tokens`) of the recall system message
within the agent's ``recall_token_budget``; *cost* is the embedding's input tokens at the
price table's rate. A session turn with ``extract_facts`` adds, after the reply, one
cheap-tier model call and one embedding call plus one ``PutVectors`` (not timed here).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench.stats import summarize

HEADING = "## Memory: recall latency, cost and prompt tokens per turn (1,000 and 10,000 memories)"
SIZES = (1_000, 10_000)
#: ``--quick`` (CI): the small index only.
QUICK = (1_000,)
DIM = 256
PER_CUSTOMER = 10
TOPICS = (
    "prefers email over phone calls",
    "wants deliveries after 6 pm",
    "speaks French and German",
    "has a premium plan since 2024",
    "uses an Android phone",
    "asked to be called by first name",
    "returns shoes often because of sizing",
    "lives in Lyon near the station",
    "pays by invoice, never by card",
    "prefers short answers",
)
QUESTION = "Can you email me instead of calling, and deliver after 6 pm?"


def _seed(store: Any, owner_of: Callable[[int], Any], size: int, now: int) -> None:
    from infra.local.fake_model.embeddings import embed
    from stratus.memory.service import memory_id
    from stratus.memory.store import Vector

    batch: list[Any] = []
    for n in range(size):
        owner = owner_of(n // PER_CUSTOMER)
        text = f"The customer {TOPICS[n % PER_CUSTOMER]} (note {n})."
        meta = {
            "tenant_id": owner.tenant_id,
            "customer_id": owner.customer_id,
            "agent": "support",
            "kind": "fact",
            "session_id": "-",
            "created_at": now,
            "expires_at": now + 86_400,
            "text": text,
        }
        batch.append(Vector(owner.key(memory_id(owner, "fact", text)), embed(text, DIM), meta))
        if len(batch) == 500:
            store.put(batch)
            batch = []
    if batch:
        store.put(batch)


def measure(
    queries: int = 5, sizes: tuple[int, ...] = SIZES, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Recall numbers per index size (``queries`` recalls each, one customer each)."""
    import boto3
    import openai
    from moto import mock_aws

    from bench.roundtrips import recording
    from functions.agents import load_agent
    from infra.local import moto_vectors
    from infra.local.fake_model import FakeModelServer
    from stratus.aws import AwsClients
    from stratus.memory.agent import recall_message
    from stratus.memory.s3vectors import S3VectorStore
    from stratus.memory.service import Memory
    from stratus.memory.store import Owner, score
    from stratus.prices import load_price_table
    from stratus.tokens import chat_message_tokens
    from stratus.usage import Usage

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    policy = load_agent("support").memory
    assert policy is not None
    prices = load_price_table()
    model = "text-embedding-3-small"
    rows: list[dict[str, Any]] = []
    moto_vectors.install()
    try:
        with FakeModelServer(quiet=True) as fake, mock_aws():
            client = openai.OpenAI(api_key="sk-bench", base_url=fake.url, max_retries=0)
            for size in sizes:
                bucket = f"bench-memory-{size}"
                s3v = boto3.client("s3vectors")
                s3v.create_vector_bucket(vectorBucketName=bucket)
                s3v.create_index(
                    vectorBucketName=bucket,
                    indexName="memories",
                    dataType="float32",
                    dimension=DIM,
                    distanceMetric="cosine",
                    metadataConfiguration={"nonFilterableMetadataKeys": ["text"]},
                )
                store = S3VectorStore(AwsClients(), bucket, "memories")
                now = int(time.time())
                started = time.perf_counter()
                _seed(store, lambda c: Owner("bench-tenant", f"customer-{c}"), size, now)
                log(f"memory: {size} memories seeded in {time.perf_counter() - started:.1f} s")
                embed_ms, query_ms, total_ms, tokens, recalled, costs, calls = (
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                )
                customers = size // PER_CUSTOMER
                for q in range(queries):
                    owner = Owner("bench-tenant", f"customer-{(q * 37) % customers}")
                    t0 = time.perf_counter()
                    answer = client.embeddings.create(model=model, input=[QUESTION], dimensions=DIM)
                    t1 = time.perf_counter()
                    with recording() as trace:
                        found = store.query(
                            answer.data[0].embedding,
                            top_k=policy.top_k,
                            filter=owner.filter(time.time()),
                        )
                    t2 = time.perf_counter()
                    calls.append(trace.requests("s3vectors"))
                    memories = [
                        Memory.of(m.key, m.metadata, score("cosine", m.distance))
                        for m in found
                        if score("cosine", m.distance) >= policy.min_score
                    ]
                    message, used = recall_message(memories, policy.recall_token_budget)
                    tokens.append(
                        chat_message_tokens("system", message["content"]) if message else 0
                    )
                    recalled.append(used)
                    usage = Usage(input_tokens=answer.usage.prompt_tokens)
                    costs.append(float(prices.cost(model, usage)))
                    embed_ms.append((t1 - t0) * 1000)
                    query_ms.append((t2 - t1) * 1000)
                    total_ms.append((t2 - t0) * 1000)
                rows.append(
                    {
                        "memories": size,
                        "customers": customers,
                        "queries": queries,
                        "embed_ms": summarize(embed_ms),
                        "query_ms": summarize(query_ms),
                        "recall_ms": summarize(total_ms),
                        "prompt_tokens_added": {
                            "mean": sum(tokens) / len(tokens),
                            "max": max(tokens),
                        },
                        "recalled": {"mean": sum(recalled) / len(recalled), "max": max(recalled)},
                        "cost_usd_per_turn": sum(costs) / len(costs),
                        "s3vectors_requests_per_recall": max(calls),
                    }
                )
                log(f"memory: {size}: recall p50 {rows[-1]['recall_ms']['median']:.1f} ms")
    finally:
        moto_vectors.uninstall()
    return {
        "agent": "support",
        "top_k": policy.top_k,
        "min_score": policy.min_score,
        "recall_token_budget": policy.recall_token_budget,
        "dimension": DIM,
        "embedding_model": model,
        "round_trips": {
            "dynamodb_sequential": 2,
            "embedding_requests": 1,
            "s3vectors_requests": 1,
            "note": "per turn with auto recall; the embedding call's reserve and settle waves",
        },
        "rows": rows,
    }


def render(data: dict[str, Any]) -> list[str]:
    lines = [
        HEADING,
        "",
        f"Agent `{data['agent']}`: top {data['top_k']} memories with score >= "
        f"{data['min_score']}, within {data['recall_token_budget']} estimated prompt tokens; "
        f"`{data['embedding_model']}` at {data['dimension']} dimensions (offline fake model: "
        "hashed-word embeddings, the harness, not quality). Per turn, recall adds "
        f"{data['round_trips']['dynamodb_sequential']} sequential DynamoDB round trips (the "
        "embedding call's reserve and settle, as any model call), 1 embedding request and "
        f"{data['round_trips']['s3vectors_requests']} `QueryVectors`. The query here is moto's "
        "exact scan in-process (it grows with the index); S3 Vectors' own is approximate.",
        "",
        "| memories | customers | embed p50 ms | query p50 / p90 ms | recall p50 / p90 ms "
        "| prompt tokens added (mean / max) | recalled (mean) | cost per turn USD "
        "| S3 Vectors requests |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['memories']:,} | {row['customers']:,} | {row['embed_ms']['median']:.1f} "
            f"| {row['query_ms']['median']:.1f} / {row['query_ms']['p90']:.1f} "
            f"| {row['recall_ms']['median']:.1f} / {row['recall_ms']['p90']:.1f} "
            f"| {row['prompt_tokens_added']['mean']:.0f} / {row['prompt_tokens_added']['max']} "
            f"| {row['recalled']['mean']:.1f} | {row['cost_usd_per_turn']:.8f} "
            f"| {row['s3vectors_requests_per_recall']} |"
        )
    return [*lines, ""]

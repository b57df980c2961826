"""The review store port: the DynamoDB adapter (on moto) and the in-memory fake agree."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stratus.ddb import ConditionFailed, Table
from stratus.reviews import MemoryReviewStore, ReviewStore
from stratus.reviews_dynamo import DynamoReviewStore
from tests.tables import create_tables


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, aws_credentials: None) -> Iterator[ReviewStore]:
    if request.param == "memory":
        yield MemoryReviewStore()
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        yield DynamoReviewStore(Table(create_tables(client)["reviews"], client))


def review(n: int, *, tenant: str = "t1", agent: str = "triage", **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        # Ids sort by creation time: a higher n is newer.
        "review_id": f"rv_{n:012x}abcdef0123",
        "agent": agent,
        "release": "1.0.0",
        "kind": "job",
        "source_id": f"job-{n}",
        "model": "gpt-5-mini",
        "status": "pending",
        "input": f"question {n}",
        "output": f"answer {n}",
        "input_truncated": False,
        "output_truncated": False,
        "created_at": "2026-12-01T00:00:00.000+00:00",
        "expires_at": 2_000_000_000,
        **extra,
    }


def rid(n: int) -> str:
    return review(n)["review_id"]


def test_a_review_is_read_back_only_in_its_tenant(store: ReviewStore) -> None:
    store.put_new(review(1))
    got = store.get("t1", rid(1))
    assert got is not None
    assert {k: got[k] for k in ("review_id", "agent", "status", "input", "output")} == {
        "review_id": rid(1),
        "agent": "triage",
        "status": "pending",
        "input": "question 1",
        "output": "answer 1",
    }
    assert store.get("t2", rid(1)) is None
    assert store.get("t1", rid(2)) is None


def test_a_review_id_is_written_once(store: ReviewStore) -> None:
    store.put_new(review(1))
    with pytest.raises(ConditionFailed):
        store.put_new(review(1, output="other"))
    assert store.get("t1", rid(1))["output"] == "answer 1"  # type: ignore[index]


def test_pages_are_newest_first_and_filtered(store: ReviewStore) -> None:
    for n in range(1, 8):
        store.put_new(review(n, agent="triage" if n % 2 else "returns"))
    store.put_new(review(99, tenant="t2"))
    items, after = store.page("t1", status=None, agent=None, limit=3, after=None)
    assert [i["review_id"] for i in items] == [rid(7), rid(6), rid(5)]
    assert after == rid(5)
    items, after = store.page("t1", status=None, agent=None, limit=3, after=after)
    assert [i["review_id"] for i in items] == [rid(4), rid(3), rid(2)]
    items, after = store.page("t1", status=None, agent=None, limit=3, after=after)
    assert [i["review_id"] for i in items] == [rid(1)] and after is None

    items, after = store.page("t1", status=None, agent="returns", limit=2, after=None)
    assert [i["review_id"] for i in items] == [rid(6), rid(4)]
    items, after = store.page("t1", status=None, agent="returns", limit=2, after=after)
    assert [i["review_id"] for i in items] == [rid(2)] and after is None


def test_an_exactly_full_last_page_has_no_next(store: ReviewStore) -> None:
    for n in range(1, 5):
        store.put_new(review(n))
    items, after = store.page("t1", status="pending", agent=None, limit=4, after=None)
    assert len(items) == 4 and after is None
    items, after = store.page("t1", status=None, agent=None, limit=4, after=None)
    assert len(items) == 4 and after is None


def test_grading_is_once_and_adds_to_the_aggregate(store: ReviewStore) -> None:
    for n in (1, 2, 3):
        store.put_new(review(n))
    store.put_new(review(4, release="2.0.0"))
    at = "2026-12-01T01:00:00.000+00:00"
    assert store.grade(review(1), score=Decimal("0.8"), comment="good", reviewed_at=at)
    assert not store.grade(review(1), score=Decimal("0.1"), comment="again", reviewed_at=at)
    assert store.grade(review(2), score=Decimal("0.5"), comment="", reviewed_at=at)
    assert store.grade(review(4, release="2.0.0"), score=Decimal(1), comment="", reviewed_at=at)

    graded = store.get("t1", rid(1))
    assert graded is not None
    assert (graded["status"], graded["score"], graded["comment"]) == (
        "reviewed",
        Decimal("0.8"),
        "good",
    )
    aggregate = store.score("t1", "triage", "1.0.0")
    assert aggregate is not None
    assert (aggregate["score_sum"], aggregate["reviewed"]) == (Decimal("1.3"), 2)
    assert [(s["release"], s["reviewed"]) for s in store.scores("t1")] == [
        ("1.0.0", 2),
        ("2.0.0", 1),
    ]
    assert store.scores("t1", "returns") == [] and store.scores("t2") == []
    # Status filters see the grades.
    pending, _ = store.page("t1", status="pending", agent=None, limit=10, after=None)
    reviewed, _ = store.page("t1", status="reviewed", agent=None, limit=10, after=None)
    assert [i["review_id"] for i in pending] == [rid(3)]
    assert [i["review_id"] for i in reviewed] == [rid(4), rid(2), rid(1)]


def test_grading_a_missing_or_other_tenants_review_changes_nothing(store: ReviewStore) -> None:
    store.put_new(review(1))
    at = "2026-12-01T01:00:00.000+00:00"
    assert not store.grade(review(1, tenant="t2"), score=Decimal(1), comment="", reviewed_at=at)
    assert not store.grade(review(5), score=Decimal(1), comment="", reviewed_at=at)
    assert store.scores("t1") == [] and store.scores("t2") == []
    assert store.get("t1", rid(1))["status"] == "pending"  # type: ignore[index]

"""Human review sampling: a share of live answers queued for people to grade.

Where an answer is final (a job that succeeded, an invoke, a session turn), the
runtime :meth:`Reviews.offer` s it: with probability the agent's share
(``STRATUS_REVIEW_SAMPLE_RATE``, per-agent ``STRATUS_REVIEW_SAMPLE_RATES``, a
canary's ``STRATUS_REVIEW_SAMPLE_RATE_CANARY``) it writes one review item, and
nothing at all otherwise. An offer runs after the answer is built and never
fails it: an error is logged and swallowed.

People list and grade reviews (``GET/POST /v1/reviews``, ``stratus review``).
Grading is one transaction: the review moves ``pending`` -> ``reviewed`` on a
condition (a review is graded once; a second grade is ``409 already_reviewed``)
and its (tenant, agent, release) aggregate ``ADD`` s the score and one count, so
the human score is ``score_sum / reviewed`` and a retry can never count twice.
Each grade emits the ``HumanScore`` metric (dimensions ``agent`` and ``release``).

Items of the reviews table, partitioned by tenant (``pk = T#<tenant>``): a review
``sk = R#<review id>`` (ids sort by time: newest first is a backward query) with
input and output clipped to :data:`MAX_TEXT_CHARS` characters each and a
retention TTL; an aggregate ``sk = S#<agent>#<release>``.

DynamoDB round trips: an offer 1 PutItem when sampled (0 otherwise); a listing 1
(its page query and the scores query together; more queries only when filters skip
items, at most :data:`MAX_PAGES`); a grade 3 in turn (read the review, the
transaction, read the updated score).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from stratus.config import Settings
from stratus.errors import BadRequest, ConfigurationError, StratusError
from stratus.fanout import run_all, values
from stratus.observability import logger, metrics

Item = dict[str, Any]
ReviewKind = Literal["invoke", "job", "session"]
StatusFilter = Literal["pending", "reviewed", "all"]

#: Characters of an answer's input and of its output kept on a review (each).
MAX_TEXT_CHARS = 8000
MAX_COMMENT_CHARS = 2000
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
#: Queries one listing may make to fill a page when filters skip items.
MAX_PAGES = 4


class ReviewNotFound(StratusError):
    """No review with this id in the caller's tenant (another tenant's looks the same)."""

    code = "not_found"
    status = 404


class AlreadyReviewed(StratusError):
    """The review has its grade already; a review is graded once."""

    code = "already_reviewed"
    status = 409


class InvalidCursor(StratusError):
    """The cursor is not one this listing gave out, or another tenant's: like another
    tenant's review, the page it names is not found (a cursor is a schema-valid string
    whose validity no schema can state, so this is no 400)."""

    code = "invalid_cursor"
    status = 404


def new_review_id(now_s: float) -> str:
    """``rv_`` + the time in ms (12 hex digits) + 40 random bits: sorts by creation time."""
    return f"rv_{int(now_s * 1000):012x}{secrets.token_hex(5)}"


def clip(value: Any, limit: int = MAX_TEXT_CHARS) -> tuple[str, bool]:
    """``value`` as text (JSON unless a string), cut to ``limit`` characters; (text, cut)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return (text[:limit], True) if len(text) > limit else (text, False)


def human_score(aggregate: Mapping[str, Any]) -> dict[str, Any]:
    """The public view of an aggregate: ``{"agent", "release", "score", "reviewed"}``."""
    count = int(aggregate.get("reviewed", 0))
    total = Decimal(str(aggregate.get("score_sum", 0)))
    return {
        "agent": str(aggregate["agent"]),
        "release": str(aggregate["release"]),
        "score": round(float(total / count), 4) if count else None,
        "reviewed": count,
    }


REVIEW_FIELDS = (
    "review_id",
    "agent",
    "release",
    "kind",
    "source_id",
    "model",
    "status",
    "input",
    "output",
    "input_truncated",
    "output_truncated",
    "created_at",
    "score",
    "comment",
    "reviewed_at",
)


def review_view(item: Mapping[str, Any]) -> dict[str, Any]:
    view = {name: item.get(name) for name in REVIEW_FIELDS}
    if view["score"] is not None:
        view["score"] = float(view["score"])
    view["input_truncated"] = bool(view["input_truncated"])
    view["output_truncated"] = bool(view["output_truncated"])
    return view


class ReviewStore(Protocol):
    """Reviews and their aggregates, per tenant."""

    def put_new(self, item: Mapping[str, Any]) -> None:
        """Store a new review (``tenant_id`` and ``review_id`` among its fields); an id that
        exists raises ``stratus.ddb.ConditionFailed`` (never a replace)."""
        ...

    def get(self, tenant_id: str, review_id: str) -> Item | None: ...

    def page(
        self,
        tenant_id: str,
        *,
        status: str | None,
        agent: str | None,
        limit: int,
        after: str | None,
    ) -> tuple[list[Item], str | None]:
        """Up to ``limit`` reviews older than ``after``, newest first; and the id to pass as
        ``after`` for the next page (None when no match is left)."""
        ...

    def grade(
        self, review: Mapping[str, Any], *, score: Decimal, comment: str, reviewed_at: str
    ) -> bool:
        """Grade a pending review and add to its aggregate, in one transaction; False if the
        review is not pending (graded already, or gone)."""
        ...

    def scores(self, tenant_id: str, agent: str | None = None) -> list[Item]:
        """The tenant's aggregates (of one agent), by agent and release."""
        ...

    def score(self, tenant_id: str, agent: str, release: str) -> Item | None: ...


class MemoryReviewStore:
    """:class:`ReviewStore` in process (unit tests)."""

    def __init__(self) -> None:
        self._reviews: dict[tuple[str, str], Item] = {}
        self._scores: dict[tuple[str, str, str], Item] = {}
        self._lock = threading.Lock()

    def put_new(self, item: Mapping[str, Any]) -> None:
        from stratus.ddb import ConditionFailed

        key = (str(item["tenant_id"]), str(item["review_id"]))
        with self._lock:
            if key in self._reviews:
                raise ConditionFailed()
            self._reviews[key] = dict(item)

    def get(self, tenant_id: str, review_id: str) -> Item | None:
        with self._lock:
            item = self._reviews.get((tenant_id, review_id))
            return dict(item) if item else None

    def page(
        self,
        tenant_id: str,
        *,
        status: str | None,
        agent: str | None,
        limit: int,
        after: str | None,
    ) -> tuple[list[Item], str | None]:
        with self._lock:
            matches = [
                dict(item)
                for (tenant, rid), item in sorted(self._reviews.items(), reverse=True)
                if tenant == tenant_id
                and (after is None or rid < after)
                and (status is None or item["status"] == status)
                and (agent is None or item["agent"] == agent)
            ]
        found = matches[:limit]
        return found, found[-1]["review_id"] if len(matches) > limit else None

    def grade(
        self, review: Mapping[str, Any], *, score: Decimal, comment: str, reviewed_at: str
    ) -> bool:
        tenant, agent, release = review["tenant_id"], review["agent"], review["release"]
        with self._lock:
            item = self._reviews.get((tenant, review["review_id"]))
            if item is None or item["status"] != "pending":
                return False
            item.update(status="reviewed", score=score, comment=comment, reviewed_at=reviewed_at)
            aggregate = self._scores.setdefault(
                (tenant, agent, release),
                {"agent": agent, "release": release, "score_sum": Decimal(0), "reviewed": 0},
            )
            aggregate["score_sum"] += score
            aggregate["reviewed"] += 1
        return True

    def scores(self, tenant_id: str, agent: str | None = None) -> list[Item]:
        with self._lock:
            return [
                dict(item)
                for (tenant, name, _), item in sorted(self._scores.items())
                if tenant == tenant_id and (agent is None or name == agent)
            ]

    def score(self, tenant_id: str, agent: str, release: str) -> Item | None:
        with self._lock:
            item = self._scores.get((tenant_id, agent, release))
            return dict(item) if item else None


def _tenant_tag(tenant_id: str) -> str:
    return hashlib.sha256(tenant_id.encode()).hexdigest()[:16]


def encode_cursor(tenant_id: str, review_id: str) -> str:
    raw = json.dumps({"t": _tenant_tag(tenant_id), "a": review_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(tenant_id: str, cursor: str) -> str:
    """The review id a cursor continues after; ``invalid_cursor`` unless this tenant's."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        after, tag = data["a"], data["t"]
    except (ValueError, binascii.Error, KeyError, TypeError):
        raise InvalidCursor("the cursor is not valid; pass next_cursor as given") from None
    if tag != _tenant_tag(tenant_id) or not isinstance(after, str):
        raise InvalidCursor("the cursor is not valid for this tenant")
    return after


#: A grade is stored with this many decimals.
SCORE_DECIMALS = 4


class Reviews:
    """The sampler (:meth:`offer`) and the review desk (:meth:`list`, :meth:`grade`)."""

    def __init__(
        self,
        settings: Settings,
        store: ReviewStore | None,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.rng = rng

    # -- sampling

    def rate(self, agent: str, *, canary: bool = False) -> float:
        """The share of ``agent``'s answers queued for review (a canary's may differ)."""
        s = self.settings
        if canary and s.review_sample_rate_canary is not None:
            return s.review_sample_rate_canary
        return s.review_sample_rates.get(agent, s.review_sample_rate)

    def offer(
        self,
        tenant_id: str,
        agent: str,
        release: str,
        kind: ReviewKind,
        source_id: str,
        input: Any,
        output: Any,
        model: str,
        *,
        canary: bool = False,
    ) -> str | None:
        """Queue the answer for review with probability :meth:`rate`; the review id, or None
        (not sampled, no table, or the write failed: logged, never raised)."""
        try:
            rate = self.rate(agent, canary=canary)
            if self.store is None or rate <= 0 or self.rng() >= rate:
                return None
            now = self.clock()
            review_id = new_review_id(now)
            text_in, cut_in = clip(input)
            text_out, cut_out = clip(output)
            self.store.put_new(
                {
                    "tenant_id": tenant_id,
                    "review_id": review_id,
                    "agent": agent,
                    "release": release,
                    "kind": kind,
                    "source_id": source_id,
                    "model": model,
                    "status": "pending",
                    "input": text_in,
                    "output": text_out,
                    "input_truncated": cut_in,
                    "output_truncated": cut_out,
                    "canary": canary,
                    "created_at": _iso(now),
                    "expires_at": int(now) + self.settings.review_retention_days * 86_400,
                }
            )
        except Exception:
            logger.exception("queueing an answer for review failed; the answer is unaffected")
            return None
        logger.info("answer queued for review", extra={"review_id": review_id, "agent": agent})
        return review_id

    def offer_job(self, job: Mapping[str, Any], output: Any, runner: Any) -> str | None:
        """:meth:`offer` for a job that succeeded (``runner``: the agent's runner)."""
        try:
            spec = runner.spec
            source = json.loads(job["input"]) if isinstance(job.get("input"), str) else None
            model = str(getattr(runner, "model_name", "") or "")
            # The release the worker recorded on its claim; else the runner's spec's own.
            job_id = str(job["job_id"])
            release = str(job.get("release") or _release_of(spec, self.settings))
        except Exception:
            logger.exception("queueing a job's answer for review failed")
            return None
        return self.offer(
            str(job["tenant_id"]), spec.name, release, "job", job_id, source, output, model
        )

    # -- the review desk

    def _store(self) -> ReviewStore:
        if self.store is None:
            raise ConfigurationError("STRATUS_REVIEWS_TABLE is not set for this function")
        return self.store

    def list(
        self,
        tenant_id: str,
        *,
        agent: str | None = None,
        status: StatusFilter = "pending",
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page of the tenant's reviews, newest first, with the human scores."""
        store = self._store()
        after = decode_cursor(tenant_id, cursor) if cursor else None
        # The page and the scores together: one round trip.
        (items, last), scores = values(
            run_all(
                [
                    lambda: store.page(
                        tenant_id,
                        status=None if status == "all" else status,
                        agent=agent,
                        limit=max(1, min(MAX_LIMIT, limit)),
                        after=after,
                    ),
                    lambda: store.scores(tenant_id, agent),
                ]
            )
        )
        return {
            "reviews": [review_view(item) for item in items],
            "next_cursor": encode_cursor(tenant_id, last) if last else None,
            "human_score": [human_score(s) for s in scores],
        }

    def get(self, tenant_id: str, review_id: str) -> dict[str, Any]:
        item = self._store().get(tenant_id, review_id)
        if item is None:
            raise ReviewNotFound(f"no review {review_id!r}", details={"review_id": review_id})
        return review_view(item)

    def grade(
        self, tenant_id: str, review_id: str, score: float, comment: str = ""
    ) -> dict[str, Any]:
        """Record a person's grade (0..1); the graded review and its ``human_score``."""
        if not 0 <= score <= 1 or len(comment) > MAX_COMMENT_CHARS:
            raise BadRequest("score must be within 0..1 and comment at most 2000 characters")
        store = self._store()
        review = store.get(tenant_id, review_id)
        if review is None:
            raise ReviewNotFound(f"no review {review_id!r}", details={"review_id": review_id})
        # Four decimals: a grade is not finer, and DynamoDB numbers stop at 1E-130 (the
        # fuzzer's 2.45e-245 was a 500).
        value, at = Decimal(str(round(float(score), SCORE_DECIMALS))), _iso(self.clock())
        if review["status"] != "pending" or not store.grade(
            review, score=value, comment=comment, reviewed_at=at
        ):
            latest = store.get(tenant_id, review_id) or review
            raise AlreadyReviewed(
                f"review {review_id} is graded already",
                details={"review_id": review_id, "score": _float(latest.get("score"))},
            )
        agent, release = str(review["agent"]), str(review["release"])
        emit_human_score(agent, release, score)
        aggregate = store.score(tenant_id, agent, release) or {
            "agent": agent,
            "release": release,
            "score_sum": value,
            "reviewed": 1,
        }
        review.update(status="reviewed", score=value, comment=comment, reviewed_at=at)
        logger.info("review graded", extra={"review_id": review_id, "agent": agent})
        return {**review_view(review), "human_score": human_score(aggregate)}


def emit_human_score(agent: str, release: str, score: float) -> None:
    """One ``HumanScore`` data point (EMF, now), dimensions ``agent`` and ``release``."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    try:
        with single_metric(
            name="HumanScore", unit=MetricUnit.NoUnit, value=score, namespace=metrics.namespace
        ) as metric:
            metric.add_dimension(name="agent", value=agent)
            metric.add_dimension(name="release", value=release)
    except Exception:  # a metric never fails the grade that is recorded already
        logger.exception("emitting HumanScore failed")


def _release_of(spec: Any, settings: Settings) -> str:
    from stratus.releases import release_of

    return release_of(spec, settings)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _iso(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).isoformat(timespec="milliseconds")

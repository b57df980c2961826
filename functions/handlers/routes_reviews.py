"""Human review of sampled answers (platform function; scope ``admin``).

``GET /v1/reviews?agent=&status=pending|reviewed|all&limit=&cursor=`` lists the
caller tenant's reviews, newest first, with the human score of each agent and
release; ``GET /v1/reviews/{id}`` reads one; ``POST /v1/reviews/{id}``
``{"score": 0..1, "comment": "..."}`` grades it once (``409 already_reviewed``
after that) and answers the review with its updated ``human_score``. Another
tenant's review answers ``404 not_found`` like a missing one, and another tenant's
(or a made-up) cursor ``404 invalid_cursor``; an agent the stack lacks is
``404 agent_not_found``. The domain is
:class:`stratus.reviews.Reviews` (``composition.current().reviews``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel, ConfigDict, Field

from functions.agents import agent_names
from functions.handlers.common import ERROR_RESPONSES, FORBIDDEN_RESPONSE, require_scope, tenant_id
from stratus import composition
from stratus.errors import AgentNotFound
from stratus.reviews import DEFAULT_LIMIT, MAX_COMMENT_CHARS, MAX_LIMIT

router = Router()

#: The scopes that may read and grade reviews (issue 14 may add a review scope here).
REVIEW_SCOPES = ("admin",)
REVIEW_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class HumanScore(BaseModel):
    agent: str
    release: str
    #: Mean of the grades (0..1); None before the first grade.
    score: float | None
    reviewed: int


class Review(BaseModel):
    review_id: str
    agent: str
    release: str
    kind: Literal["invoke", "job", "session"]
    #: The job id, request id or session id the answer came from.
    source_id: str
    model: str | None = None
    status: Literal["pending", "reviewed"]
    #: The answer's input and output as text, each clipped to 8000 characters.
    input: str
    output: str
    input_truncated: bool
    output_truncated: bool
    created_at: str
    score: float | None = None
    comment: str | None = None
    reviewed_at: str | None = None


class ReviewList(BaseModel):
    reviews: list[Review]
    #: Pass as ``cursor`` for the next page; None on the last one.
    next_cursor: str | None
    human_score: list[HumanScore]


class GradedReview(Review):
    human_score: HumanScore


class GradeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: strict: JSON true/false and numeric strings are not grades.
    score: float = Field(ge=0, le=1, strict=True, description="The grade, 0 (bad) to 1 (good).")
    comment: str = Field(default="", max_length=MAX_COMMENT_CHARS)


def _responses(model: type[BaseModel], text: str) -> dict[int, Any]:
    return {
        200: {"description": text, "content": {"application/json": {"model": model}}},
        **ERROR_RESPONSES,
        **FORBIDDEN_RESPONSE,
    }


def _caller() -> str:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)
    tenant = tenant_id(event)
    require_scope(event, *REVIEW_SCOPES)
    return tenant


def _json(model: type[BaseModel], body: Any) -> Response[str]:
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(model.model_validate(body).model_dump(mode="json")),
    )


@router.get(
    "/v1/reviews",
    summary="Sampled answers to review (newest first) and the human scores",
    responses=_responses(ReviewList, "A page of reviews"),
)
def list_reviews(
    agent: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: Annotated[Literal["pending", "reviewed", "all"], Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Response[str]:
    tenant = _caller()
    if agent is not None and agent not in agent_names():
        raise AgentNotFound(f"no agent named {agent!r}", details={"agent": agent})
    page = composition.current().reviews.list(
        tenant, agent=agent, status=status, limit=limit, cursor=cursor
    )
    return _json(ReviewList, page)


@router.get(
    "/v1/reviews/<review_id>",
    summary="One review",
    responses=_responses(Review, "The review"),
)
def get_review(review_id: REVIEW_ID) -> Response[str]:
    return _json(Review, composition.current().reviews.get(_caller(), review_id))


@router.post(
    "/v1/reviews/<review_id>",
    summary="Grade a review (once) and get its agent and release's updated human score",
    responses=_responses(GradedReview, "The graded review"),
)
def grade_review(review_id: REVIEW_ID, body: Annotated[GradeRequest, Body()]) -> Response[str]:
    tenant = _caller()
    graded = composition.current().reviews.grade(tenant, review_id, body.score, body.comment)
    return _json(GradedReview, graded)

"""researcher: a supervised workflow example (plan -> research steps -> review).

Jobs of this agent run as the ``researcher`` Step Functions workflow
(``infra/workflows/researcher.asl.json``): the supervisor (``SPEC``, smart tier)
plans research steps, a Map state runs each step with the worker (``STEP``, fast
tier) with bounded concurrency, the supervisor reviews the findings (``REVIEW``,
smart tier), and an optional human approval gates completion. Called
synchronously (``/v1/agents/researcher/invoke``) it returns the plan only.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from stratus.agents import AgentSpec, Deployment, Limits
from stratus.workflows import SupervisedWorkflow

PROMPTS = Path(__file__).with_name("prompts")


class ResearchPlan(BaseModel):
    steps: list[str] = Field(
        min_length=2,
        max_length=5,
        description="Independent research questions, one per step, each answerable on its own.",
    )


class ResearchReport(BaseModel):
    answer: str = Field(max_length=4000, description="The answer to the original question.")
    confidence: float = Field(ge=0, le=1, description="How well the findings support it.")
    gaps: str = Field(max_length=1000, description="What the findings leave open.")


SPEC = AgentSpec(
    name="researcher",
    version="1.0.0",
    description="Plans research steps for a question (the supervisor of the research workflow).",
    tier="smart",
    prompt_version="v1",
    prompt_dir=PROMPTS,
    output_schema=ResearchPlan,
    limits=Limits(max_output_tokens=1500, max_iterations=1, max_input_chars=16_000),
    deployment=Deployment(memory_mb=512, timeout_s=28),
    workflow="researcher",
)

STEP = AgentSpec(
    name="researcher_step",
    version="1.0.0",
    description="Answers one research question of a plan (worker, cheap tier).",
    tier="fast",
    prompt_version="v1",
    prompt_dir=PROMPTS / "step",
    limits=Limits(max_output_tokens=800, max_iterations=1, max_input_chars=16_000),
)

REVIEW = AgentSpec(
    name="researcher_review",
    version="1.0.0",
    description="Reviews the findings and writes the answer (supervisor, smart tier).",
    tier="smart",
    prompt_version="v1",
    prompt_dir=PROMPTS / "review",
    output_schema=ResearchReport,
    limits=Limits(max_output_tokens=2000, max_iterations=1, max_input_chars=48_000),
)

WORKFLOW = SupervisedWorkflow(planner=SPEC, worker=STEP, reviewer=REVIEW)

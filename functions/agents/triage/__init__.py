"""triage: classifies a customer message so it can be routed (cheap tier)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from stratus.agents import AgentSpec, Deployment, Limits
from stratus.guardrails.policy import CUSTOMER_FACING

Category = Literal["order_status", "return_request", "billing", "tech_support", "other"]


class TriageDecision(BaseModel):
    category: Category = Field(description="Where the message should be routed.")
    confidence: float = Field(ge=0, le=1, description="How sure the classification is.")
    summary: str = Field(max_length=500, description="The customer's need in one sentence.")


SPEC = AgentSpec(
    name="triage",
    version="1.0.0",
    description="Classifies a support message into a routing category.",
    tier="fast",
    prompt_version="v1",
    prompt_dir=Path(__file__).with_name("prompts"),
    output_schema=TriageDecision,
    limits=Limits(max_output_tokens=512, max_iterations=1, max_input_chars=8_000),
    deployment=Deployment(memory_mb=512, timeout_s=20),
    # Customer-facing: injection and jailbreak attempts are refused (422 input_rejected).
    guardrails=CUSTOMER_FACING,
    # A job submitted with "route": true is handed to the specialist for its category.
    routes={"order_status": "order_status", "return_request": "returns"},
)

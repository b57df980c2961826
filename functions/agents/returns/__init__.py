"""returns: decides whether a return is allowed under the shop's policy (smart tier)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from stratus.agents import AgentSpec, Deployment, Limits
from stratus.guardrails.policy import CUSTOMER_FACING


class ReturnDecision(BaseModel):
    eligible: bool = Field(description="Whether the policy allows this return.")
    reason: str = Field(max_length=1000, description="Which policy rule decides, and why.")
    next_steps: str = Field(max_length=1000, description="What the customer should do now.")


SPEC = AgentSpec(
    name="returns",
    version="1.0.0",
    description="Reasons over the return policy to decide on a return request.",
    tier="smart",
    prompt_version="v1",
    prompt_dir=Path(__file__).with_name("prompts"),
    output_schema=ReturnDecision,
    limits=Limits(max_output_tokens=2000, max_iterations=1, max_input_chars=16_000),
    deployment=Deployment(memory_mb=512, timeout_s=28),
    # Customer-facing: injection and jailbreak attempts are refused (422 input_rejected).
    guardrails=CUSTOMER_FACING,
)

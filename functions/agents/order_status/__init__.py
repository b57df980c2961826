"""order_status: answers "where is my order?" by looking the order up (cheap tier)."""

from __future__ import annotations

from pathlib import Path

from stratus.agents import AgentSpec, Deployment, Limits
from stratus.guardrails.policy import CUSTOMER_FACING

from .tools import LOOKUP_ORDER

SPEC = AgentSpec(
    name="order_status",
    version="1.0.0",
    description="Looks up a customer's order and explains where it is.",
    tier="fast",
    prompt_version="v1",
    prompt_dir=Path(__file__).with_name("prompts"),
    tools=(LOOKUP_ORDER,),
    limits=Limits(max_output_tokens=600, max_iterations=4, max_input_chars=8_000),
    deployment=Deployment(memory_mb=512, timeout_s=28),
    # Customer-facing: injection and jailbreak attempts are refused (422 input_rejected).
    guardrails=CUSTOMER_FACING,
)

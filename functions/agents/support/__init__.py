"""support: a multi-turn support chat with sessions (cheap tier, order lookups).

Messages that arrive while a turn runs wait their turn (``enqueue``), so a
customer who double-texts gets every message answered, in order.
"""

from __future__ import annotations

from pathlib import Path

from functions.agents.order_status.tools import LOOKUP_ORDER
from stratus.agents import AgentSpec, Deployment, Limits, SessionPolicy

SPEC = AgentSpec(
    name="support",
    version="1.0.0",
    description="Support chat over a session: remembers the conversation, looks orders up.",
    tier="fast",
    prompt_version="v1",
    prompt_dir=Path(__file__).with_name("prompts"),
    tools=(LOOKUP_ORDER,),
    limits=Limits(max_output_tokens=600, max_iterations=4, max_input_chars=8_000),
    deployment=Deployment(memory_mb=512, timeout_s=28),
    sessions=SessionPolicy(
        policy="enqueue",
        ttl_s=24 * 3600,
        max_message_chars=4_000,
        context_token_budget=6_000,
        summarize_after_tokens=3_000,
        max_recent_messages=40,
        enqueue_wait_s=20.0,
    ),
)

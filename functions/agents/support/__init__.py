"""support: a multi-turn support chat with sessions (cheap tier, order lookups).

Messages that arrive while a turn runs wait their turn (``enqueue``), so a
customer who double-texts gets every message answered, in order.

Long-term memory (issue 18): the customer's preferences outlive the session. The
model may ``remember`` a lasting fact, facts are extracted at the end of each turn,
the rolling summary is kept as the session's ``summary`` memory, and the closest
memories of the same tenant and end customer are recalled into each turn's prompt.
"""

from __future__ import annotations

from pathlib import Path

from functions.agents.order_status.tools import LOOKUP_ORDER
from stratus.agents import AgentSpec, Deployment, Limits, SessionPolicy
from stratus.guardrails.policy import CUSTOMER_FACING
from stratus.memory.policy import MemoryPolicy
from stratus.memory.tools import memory_tools

MEMORY = MemoryPolicy(
    remember_tool=True,
    extract_facts=True,
    session_summaries=True,
    recall=True,
    top_k=5,
    # Every memory recalled is this customer's own: a low bar, within the token budget.
    min_score=0.1,
    recall_token_budget=400,
)

SPEC = AgentSpec(
    name="support",
    version="1.0.0",
    description="Support chat over a session: remembers the conversation, looks orders up.",
    tier="fast",
    prompt_version="v1",
    prompt_dir=Path(__file__).with_name("prompts"),
    tools=(LOOKUP_ORDER, *memory_tools(MEMORY)),
    limits=Limits(max_output_tokens=600, max_iterations=4, max_input_chars=8_000),
    deployment=Deployment(memory_mb=512, timeout_s=28),
    # Customer-facing: injection and jailbreak attempts are refused (422 input_rejected).
    guardrails=CUSTOMER_FACING,
    sessions=SessionPolicy(
        policy="enqueue",
        ttl_s=24 * 3600,
        max_message_chars=4_000,
        context_token_budget=6_000,
        summarize_after_tokens=3_000,
        max_recent_messages=40,
        enqueue_wait_s=20.0,
    ),
    memory=MEMORY,
)

"""What an agent remembers and recalls: ``AgentSpec.memory`` (None: the agent has none)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MemoryPolicy(BaseModel):
    """An agent's long-term memory (S3 Vectors), per tenant and end customer.

    What is remembered: explicit ``remember`` tool calls (``remember_tool``), facts the
    cheap tier extracts at the end of each session turn (``extract_facts``), and the
    session's rolling summary whenever it is written (``session_summaries``: one
    ``summary`` memory per session, replaced each time, which outlives the session).
    What is recalled: before the model call, the ``top_k`` memories closest to the user
    text with a score of at least ``min_score`` go into the prompt as one system message,
    as many as fit in ``recall_token_budget`` (``recall``); the model may also search
    with the ``recall`` tool (``recall_tool``). The tools must be in the spec's tools
    (:func:`stratus.memory.tools.memory_tools` gives them).
    """

    model_config = ConfigDict(frozen=True)

    remember_tool: bool = True
    extract_facts: bool = False
    session_summaries: bool = True
    #: Automatic recall into the prompt before the first model call of a run.
    recall: bool = True
    recall_tool: bool = False
    top_k: int = Field(default=5, ge=1, le=50)
    #: Similarity 0..1 (cosine: 1 - distance; euclidean: 1 / (1 + distance)).
    min_score: float = Field(default=0.2, ge=0, le=1)
    #: Prompt tokens (the runtime's estimate, :mod:`stratus.tokens`) recall may add.
    recall_token_budget: int = Field(default=400, ge=16, le=32_000)
    #: Longest text one memory keeps (longer ones are cut).
    max_memory_chars: int = Field(default=1_000, ge=16, le=4_000)
    #: Facts extracted from one turn at most.
    max_facts_per_turn: int = Field(default=5, ge=1, le=20)
    #: Output limit of the fact extraction call (cheap tier).
    facts_max_tokens: int = Field(default=256, ge=32, le=4_096)

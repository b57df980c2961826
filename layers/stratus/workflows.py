"""Supervised workflows: what an agent that declares ``workflow`` provides.

The supervisor (planner, expensive tier) splits a job into steps, workers (cheap
tier) run the steps, the supervisor (reviewer) turns the findings into the
result. The Step Functions definition (``infra/workflows/<name>.asl.json``)
orders them; the agent package exposes a ``WORKFLOW`` of this type.
"""

from __future__ import annotations

from dataclasses import dataclass

from stratus.agents import AgentSpec


@dataclass(frozen=True)
class SupervisedWorkflow:
    planner: AgentSpec
    worker: AgentSpec
    reviewer: AgentSpec
    #: At most this many steps of a plan run; the rest are dropped (and logged).
    max_steps: int = 5

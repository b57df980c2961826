"""Workflow plans: Standard state machines from ASL files with substitution variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.config import StageConfig
from infra.topology.common import WORKFLOWS_DIR, pascal
from stratus.agents import AgentSpec


@dataclass(frozen=True)
class WorkflowPlan:
    """A Standard state machine from an ASL file; ``${Var}`` -> the ARN of a function key.

    CDK passes the same file with ``definition_substitutions``; the local cloud
    substitutes the same variables itself (:meth:`render`).
    """

    agent: str
    construct_id: str
    asl_path: Path
    #: Substitution variable -> function plan key whose ARN replaces it.
    functions: Mapping[str, str]

    def state_machine_name(self, stage: StageConfig) -> str:
        return f"stratus-{stage.name}-{self.agent.replace('_', '-')}"

    @property
    def definition(self) -> str:
        return self.asl_path.read_text(encoding="utf-8")

    def render(self, function_arns: Mapping[str, str]) -> str:
        """The definition with every variable replaced by the ARN of its function."""
        text = self.definition
        for var, key in self.functions.items():
            text = text.replace("${" + var + "}", function_arns[key])
        if "${" in text:
            raise ValueError(f"{self.asl_path}: unsubstituted variable left")
        return text


def workflow_plans(specs: Mapping[str, AgentSpec]) -> list[WorkflowPlan]:
    """One state machine per agent that declares a workflow."""
    plans = []
    for name in sorted(specs):
        workflow = specs[name].workflow
        if workflow is None:
            continue
        path = WORKFLOWS_DIR / f"{workflow}.asl.json"
        if not path.is_file():
            raise ValueError(f"agent {name!r} declares workflow {workflow!r}; {path} is missing")
        plans.append(
            WorkflowPlan(
                agent=name,
                construct_id=f"Workflow{pascal(name)}",
                asl_path=path,
                functions={"WorkerFunctionArn": f"worker:{name}"},
            )
        )
    return plans

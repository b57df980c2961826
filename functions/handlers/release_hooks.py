"""The CodeDeploy pre- and post-traffic hooks of every agent's ``live`` alias.

Thin: the lifecycle event goes to :mod:`stratus.release_hooks` (which finds the
deployed version, runs or reads its gate, and always reports Succeeded or Failed
to CodeDeploy); this module only supplies the agent's eval suites and output
schema from the code asset (``functions/agents/<name>/evals/*.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.agents import load_agent
from stratus import composition
from stratus.evals.models import Suite, load_suite, suite_files
from stratus.observability import logger
from stratus.release_hooks import ReleaseHooks, for_runtime

AGENTS_DIR = Path(__file__).resolve().parent.parent / "agents"


def suites_for(agent: str) -> Sequence[Suite]:
    """The agent's suite files, as bundled with the function code."""
    return [load_suite(path) for path in suite_files(AGENTS_DIR / agent / "evals")]


def schema_for(agent: str) -> dict[str, Any] | None:
    schema = load_agent(agent).output_schema
    return None if schema is None else schema.model_json_schema()


def _hooks() -> ReleaseHooks:
    return for_runtime(composition.current(), suites_for=suites_for, schema_for=schema_for)


@logger.inject_lambda_context(clear_state=True)
def pre_traffic(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _hooks().pre_traffic(event).to_json()


@logger.inject_lambda_context(clear_state=True)
def post_traffic(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _hooks().post_traffic(event).to_json()

"""Releases in the plans: each agent function's release id, and the release hook functions.

An agent's release (:func:`stratus.releases.release_of`) is computed here, at synth,
from the same ``Settings`` values the function gets from its environment, and put in
``STRATUS_RELEASE``: the stack writes it into the published version's description
too, and the local cloud, built from the same plans, runs the same release.

The hooks are two shared functions (one per stack, not one per agent): CodeDeploy
names the function and the versions in the lifecycle event's deployment, so one
function serves every agent's deployment group, and one more function per agent
would only add cold starts and roles. ``pre_traffic`` runs the agent's critical
eval cases against the new version before it gets any traffic; ``post_traffic``
compares the new version's errors, latency and cost per task with the old one's
over the deployment. Both decide with ``stratus.release_gate.decide``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from infra.config import StageConfig
from infra.topology.common import POWERTOOLS_ENV, RELEASE_ENV, RELEASE_GATE_ENV
from stratus.agents import AgentSpec
from stratus.config import Settings
from stratus.releases import release_of

PRE_TRAFFIC_HANDLER = "functions.handlers.release_hooks.pre_traffic"
POST_TRAFFIC_HANDLER = "functions.handlers.release_hooks.post_traffic"
#: A hook runs a few critical cases (each a model call or a short session) or reads
#: metrics; CodeDeploy waits up to an hour for its status, Lambda at most 15 minutes.
HOOK_TIMEOUT_S = 600
HOOK_MEMORY_MB = 512


class _PlanEnvironment(EnvSettingsSource):
    """The environment source of ``Settings``, reading a given mapping, not ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._plan_env = dict(env)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._plan_env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def plan_settings(env: Mapping[str, str]) -> Settings:
    """The ``Settings`` a function whose whole environment is ``env`` reads: parsed as the
    runtime parses its variables, and never from the synthesizing shell's own."""

    class PlanSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], *args: Any, **kwargs: Any
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (_PlanEnvironment(settings_cls, env),)

    return PlanSettings()


def release_env(spec: AgentSpec, env: Mapping[str, str]) -> dict[str, str]:
    """``{"STRATUS_RELEASE": <release id>}`` of ``spec`` served with environment ``env``."""
    return {RELEASE_ENV: release_of(spec, plan_settings(env))}


def hook_env(stage: StageConfig) -> dict[str, str]:
    """What both hooks get: the stage and its gate policy (the alarms' thresholds too)."""
    return {
        "STRATUS_STAGE": stage.name,
        RELEASE_GATE_ENV: stage.release_gate.model_dump_json(),
        **POWERTOOLS_ENV,
    }

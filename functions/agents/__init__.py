"""The agent registry: every sub-package with a ``SPEC`` is an agent.

Adding an agent is adding one package here; the API, the CDK stack and the
local cloud discover it by name. Only the requested agent is imported, so a
function pays for its own agent's tools and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from stratus.agents import AgentSpec
from stratus.errors import AgentNotFound


@cache
def agent_names() -> tuple[str, ...]:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def load_agent(name: str) -> AgentSpec:
    if name not in agent_names():
        raise AgentNotFound(f"no agent named {name!r}", details={"agent": name})
    spec = importlib.import_module(f"{__name__}.{name}").SPEC
    if not isinstance(spec, AgentSpec) or spec.name != name:
        raise TypeError(f"{__name__}.{name}.SPEC must be an AgentSpec named {name!r}")
    return spec


def load_all() -> dict[str, AgentSpec]:
    return {name: load_agent(name) for name in agent_names()}

"""The agent registry: every sub-package with a ``SPEC`` is an agent.

Adding an agent is adding one package here; the API, the CDK stack and the
local cloud discover it by name. Only the requested agent is imported, so a
function pays for its own agent's tools and nothing else.

A canary candidate (``stratus canary``) is the served agent (``STRATUS_AGENT``)
changed through its function's environment, nothing else:

* ``STRATUS_AGENT_OVERRIDES``: a JSON object of spec fields, e.g.
  ``{"prompt_version": "v2"}`` or ``{"tier": "smart"}`` (validated like the spec);
* ``STRATUS_AGENT_PACKAGE_DIR``: a directory holding another copy of the agent's
  package (its ``__init__.py`` defines ``SPEC``), loaded instead of the built-in one.

Other agents a function loads (job routing) are never changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from stratus.agents import AgentSpec
from stratus.errors import AgentNotFound

OVERRIDES_ENV = "STRATUS_AGENT_OVERRIDES"
PACKAGE_DIR_ENV = "STRATUS_AGENT_PACKAGE_DIR"
#: Spec fields a candidate may override through ``STRATUS_AGENT_OVERRIDES``.
OVERRIDABLE = frozenset({"prompt_version", "tier", "version", "allow_downgrade"})


@cache
def agent_names() -> tuple[str, ...]:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def parse_overrides(raw: str) -> dict[str, Any]:
    """``STRATUS_AGENT_OVERRIDES`` as a dict of overridable fields (ValueError if not)."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"{OVERRIDES_ENV} is not JSON: {raw!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{OVERRIDES_ENV} must be a JSON object, not {raw!r}")
    unknown = sorted(set(value) - OVERRIDABLE)
    if unknown:
        raise ValueError(
            f"{OVERRIDES_ENV}: {', '.join(unknown)} cannot be overridden "
            f"(only {', '.join(sorted(OVERRIDABLE))})"
        )
    return value


def apply_overrides(spec: AgentSpec, overrides: Mapping[str, Any]) -> AgentSpec:
    """``spec`` with ``overrides``, validated as a spec is (a missing prompt file fails)."""
    if not overrides:
        return spec
    fields = {name: getattr(spec, name) for name in type(spec).model_fields}
    return AgentSpec.model_validate({**fields, **overrides})


def _package_module(name: str, directory: Path) -> ModuleType:
    module_name = f"{__name__}.{name}"
    init = directory / "__init__.py"
    if not init.is_file():
        raise ValueError(f"{PACKAGE_DIR_ENV}={directory}: no {init.name} there")
    found = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=[str(directory)]
    )
    if found is None or found.loader is None:
        raise ValueError(f"{PACKAGE_DIR_ENV}={directory}: not an importable package")
    module = importlib.util.module_from_spec(found)
    sys.modules[module_name] = module
    found.loader.exec_module(module)
    return module


@cache
def _candidate(name: str, directory: str, raw: str) -> AgentSpec:
    """The served agent as a candidate: another package and/or overrides (once per process)."""
    if directory:
        spec = _package_module(name, Path(directory).resolve()).SPEC
    else:
        spec = importlib.import_module(f"{__name__}.{name}").SPEC
    _check(name, spec)
    return apply_overrides(spec, parse_overrides(raw)) if raw.strip() else spec


def _check(name: str, spec: object) -> None:
    if not isinstance(spec, AgentSpec) or spec.name != name:
        raise TypeError(f"{__name__}.{name}.SPEC must be an AgentSpec named {name!r}")


def load_agent(name: str) -> AgentSpec:
    if name not in agent_names():
        raise AgentNotFound(f"no agent named {name!r}", details={"agent": name})
    if os.environ.get("STRATUS_AGENT", "") == name:
        directory = os.environ.get(PACKAGE_DIR_ENV, "")
        raw = os.environ.get(OVERRIDES_ENV, "")
        if directory or raw.strip():
            return _candidate(name, directory, raw)
    spec = importlib.import_module(f"{__name__}.{name}").SPEC
    _check(name, spec)
    assert isinstance(spec, AgentSpec)
    return spec


def load_all() -> dict[str, AgentSpec]:
    return {name: load_agent(name) for name in agent_names()}

"""The local cloud's canary control API: a candidate version of an agent, added at runtime.

``stratus canary`` and ``stratus rollback`` run in another process than ``stratus
dev``; they reach the running cloud through its AWS front (loopback only):

* ``POST /_stratus/canary/{agent}`` ``{"candidate": {"overrides": {...}} | {"package_dir":
  DIR} | {"tree": DIR}, "label": TEXT}``: publish a candidate version of the agent's API
  function and of its job worker (no traffic yet; a ``Qualifier`` reaches it). The
  candidate's environment is the stable one's with ``STRATUS_AGENT_OVERRIDES`` /
  ``STRATUS_AGENT_PACKAGE_DIR``, ``STRATUS_RELEASE`` cleared (the candidate computes its
  own); a ``tree`` (a git ref's files) is its code: its working directory and the head
  of its ``PYTHONPATH``. 409 ``canary_in_progress`` if the agent already has one.
* ``POST /_stratus/canary/{agent}/weights`` ``{"weight": 0-100, "shadow": bool}``: the
  alias of both functions; the counters of every version restart (a window begins).
* ``GET /_stratus/canary/{agent}``: the versions, the alias and each version's figures.
* ``POST /_stratus/canary/{agent}/promote``: the candidate becomes the primary version
  with all the traffic; the stable one is drained and stopped.
* ``POST /_stratus/canary/{agent}/rollback``: the candidate is dropped (after its
  in-flight invocations finish); the stable version gets 100%.

Errors: ``{"error": {"code", "message"}}`` with 400 ``invalid_candidate`` /
``invalid_weight``, 404 ``unknown_agent`` / ``no_canary`` / ``not_found``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infra.local.lambda_runtime import LambdaRuntime
from infra.local.lambda_versions import PRIMARY

PATH = re.compile(r"^/_stratus/canary/(?P<agent>[a-z0-9_]+)(?:/(?P<action>[a-z]+))?/?$")
#: Function plan keys that make up one agent (its API function and its job worker).
ROLES = ("agent", "worker")


def _error(status: int, code: str, message: str) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message}}


@dataclass
class Canary:
    """One agent's candidate: its version label per function, and what it is."""

    agent: str
    label: str
    versions: dict[str, str] = field(default_factory=dict)  # function name -> version
    weight: float = 0.0
    shadow: bool = False


class CanaryControl:
    """Serves ``/_stratus/canary...`` for one running local cloud."""

    def __init__(self, runtime: LambdaRuntime, functions: Mapping[str, str]) -> None:
        self._runtime = runtime
        #: Function plan key (``agent:triage``) -> function name.
        self._functions = dict(functions)
        self._canaries: dict[str, Canary] = {}
        self._lock = threading.Lock()

    def _names(self, agent: str) -> list[str]:
        return [self._functions[k] for k in (f"{r}:{agent}" for r in ROLES) if k in self._functions]

    def __call__(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        match = PATH.match(path)
        if match is None:
            return _error(404, "not_found", f"no control path {path}")
        agent, action = match["agent"], match["action"] or ""
        if not self._names(agent):
            return _error(404, "unknown_agent", f"no agent named {agent!r}")
        with self._lock:
            if (method, action) == ("GET", ""):
                return 200, self.status(agent)
            if (method, action) == ("POST", ""):
                return self._add(agent, body if isinstance(body, dict) else {})
            if method == "POST" and action == "weights":
                return self._weights(agent, body if isinstance(body, dict) else {})
            if method == "POST" and action in ("promote", "rollback"):
                return self._finish(agent, action)
        return _error(404, "not_found", f"no control action {method} {path}")

    def status(self, agent: str) -> dict[str, Any]:
        canary = self._canaries.get(agent)
        functions = {}
        for name in self._names(agent):
            functions[name] = {
                **self._runtime.versions(name),
                "stats": self._runtime.version_stats(name),
            }
        return {
            "agent": agent,
            "candidate": None
            if canary is None
            else {
                "label": canary.label,
                "versions": canary.versions,
                "weight": canary.weight,
                "shadow": canary.shadow,
            },
            "functions": functions,
        }

    def _candidate_config(self, name: str, candidate: Mapping[str, Any]) -> tuple[Any, Path | None]:
        stable = self._runtime.function(name)
        env = dict(stable.environment)
        env["STRATUS_RELEASE"] = ""  # never the stable version's: the candidate computes its own
        cwd: Path | None = None
        overrides = candidate.get("overrides")
        if overrides:
            if not isinstance(overrides, dict):
                raise ValueError("candidate.overrides must be an object")
            # On top of what the stable version already changed (a promoted candidate).
            current = json.loads(env.get("STRATUS_AGENT_OVERRIDES") or "{}")
            merged = {**current, **overrides}
            env["STRATUS_AGENT_OVERRIDES"] = json.dumps(merged, sort_keys=True)
        package_dir = candidate.get("package_dir")
        if package_dir:
            if not Path(str(package_dir), "__init__.py").is_file():
                raise ValueError(f"candidate.package_dir {package_dir}: no __init__.py there")
            env["STRATUS_AGENT_PACKAGE_DIR"] = str(Path(str(package_dir)).resolve())
        tree = candidate.get("tree")
        if tree:
            cwd = Path(str(tree)).resolve()
            if not (cwd / "functions").is_dir():
                raise ValueError(f"candidate.tree {tree}: no functions/ directory there")
            head = os.pathsep.join([str(cwd), str(cwd / "layers")])
            rest = env.get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")
            env["PYTHONPATH"] = head + (os.pathsep + rest if rest else "")
        if not (overrides or package_dir or tree):
            raise ValueError("a candidate needs overrides, a package_dir or a tree")
        return replace(stable, environment=env), cwd

    def _add(self, agent: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        if agent in self._canaries:
            label = self._canaries[agent].label
            return _error(409, "canary_in_progress", f"{agent} already has a candidate ({label})")
        candidate = body.get("candidate")
        if not isinstance(candidate, dict):
            return _error(400, "invalid_candidate", "candidate must be an object")
        configs = {}
        try:
            for name in self._names(agent):
                configs[name] = self._candidate_config(name, candidate)
        except ValueError as problem:
            return _error(400, "invalid_candidate", str(problem))
        canary = Canary(agent, str(body.get("label") or "candidate"))
        for name, (config, cwd) in configs.items():
            canary.versions[name] = self._runtime.add_version(name, config, cwd=cwd)
        self._canaries[agent] = canary
        return 201, self.status(agent)

    def _weights(self, agent: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        canary = self._canaries.get(agent)
        if canary is None:
            return _error(404, "no_canary", f"{agent} has no candidate")
        weight = body.get("weight", 0)
        if (
            not isinstance(weight, int | float)
            or isinstance(weight, bool)
            or not 0 <= weight <= 100
        ):
            return _error(400, "invalid_weight", "weight must be a number from 0 to 100")
        shadow = bool(body.get("shadow", False))
        for name, label in canary.versions.items():
            primary = self._runtime.versions(name)["primary"]
            if shadow:
                # Only the API function is shadowed: a job's side effects must not happen twice.
                copy = label if name == self._functions.get(f"agent:{agent}") else None
                self._runtime.route(name, {primary: 1.0}, shadow=copy)
            elif weight >= 100:
                self._runtime.route(name, {label: 1.0})
            else:
                self._runtime.route(name, {primary: 100.0 - weight, label: float(weight)})
            self._runtime.version_stats(name, reset=True)
        canary.weight, canary.shadow = float(weight), shadow
        return 200, self.status(agent)

    def _finish(self, agent: str, action: str) -> tuple[int, Any]:
        canary = self._canaries.pop(agent, None)
        if canary is None:
            if action == "rollback":  # nothing to drop: the stable version has everything
                return 200, {**self.status(agent), "action": "rollback", "dropped": {}}
            return _error(404, "no_canary", f"{agent} has no candidate")
        for name, label in canary.versions.items():
            if action == "promote":
                self._runtime.promote(name, label)
            else:
                self._runtime.drop_version(name, label)
        result = {**self.status(agent), "action": action}
        if action == "rollback":
            result["dropped"] = canary.versions
        return 200, result


__all__ = ["PRIMARY", "Canary", "CanaryControl"]

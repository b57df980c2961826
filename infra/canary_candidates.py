"""What ``stratus canary --candidate`` names, checked before anything changes.

* ``prompt_version=v2``, ``tier=smart`` (any field of
  ``functions.agents.OVERRIDABLE``): the stable agent with that change;
* a directory: another copy of the agent's package (its ``SPEC`` named like the agent);
* a git ref: the whole tree at that commit (``git archive``), under
  ``.stratus/canary/<agent>-<sha>/``; its workers run with it as their code.

Anything else is a :class:`~infra.eval_targets.UsageError` (exit 2).
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infra.eval_targets import UsageError
from infra.paths import REPO_ROOT

TREES_DIR = REPO_ROOT / ".stratus" / "canary"


@dataclass
class Candidate:
    """A checked candidate: what the control API is sent, and what to say about it."""

    kind: str  # overrides | path | git
    payload: dict[str, Any]
    description: str
    #: A git ref's tree (removed when the candidate is rolled back).
    tree: Path | None = None

    def cleanup(self) -> None:
        if self.tree is not None:
            shutil.rmtree(self.tree, ignore_errors=True)


def _overrides(agent: str, text: str) -> Candidate:
    from functions.agents import OVERRIDABLE, apply_overrides, load_agent

    key, _, value = text.partition("=")
    key = key.strip()
    if key not in OVERRIDABLE:
        raise UsageError(
            f"--candidate {text}: {key!r} cannot be changed (one of "
            f"{', '.join(sorted(OVERRIDABLE))}, a path or a git ref)"
        )
    parsed: Any = value.strip()
    if key == "allow_downgrade":
        parsed = parsed.lower() in ("1", "true", "yes")
    try:
        apply_overrides(load_agent(agent), {key: parsed})
    except ValidationError as error:
        problem = "; ".join(str(e.get("msg")) for e in error.errors())
        raise UsageError(f"--candidate {text}: not a valid {agent} ({problem})") from None
    return Candidate("overrides", {"overrides": {key: parsed}}, f"{key}={parsed}")


def check_package(agent: str, directory: Path) -> None:
    """Import ``directory`` under a private name and check its ``SPEC`` (then forget it)."""
    from stratus.agents import AgentSpec

    init = directory / "__init__.py"
    if not init.is_file():
        raise UsageError(f"--candidate {directory}: not an agent package (no __init__.py)")
    name = f"_stratus_candidate_{agent}"
    found = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(directory)]
    )
    if found is None or found.loader is None:
        raise UsageError(f"--candidate {directory}: cannot be imported")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
        spec = getattr(module, "SPEC", None)
    except Exception as error:  # its own code failed: say so, change nothing
        raise UsageError(f"--candidate {directory}: import failed: {error}") from None
    finally:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    if not isinstance(spec, AgentSpec) or spec.name != agent:
        raise UsageError(f"--candidate {directory}: its SPEC is not an AgentSpec named {agent!r}")


def _git(*args: str, capture: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603 - git with our own arguments
        ["git", "-C", str(REPO_ROOT), *args],  # noqa: S607 - git from PATH
        capture_output=capture,
        check=False,
    )


def _git_ref(agent: str, ref: str) -> Candidate | None:
    found = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0:
        return None
    sha = found.stdout.decode().strip()
    archive = _git("archive", "--format=tar", sha)
    if archive.returncode != 0:
        raise UsageError(f"--candidate {ref}: git archive failed: {archive.stderr.decode()}")
    tree = TREES_DIR / f"{agent}-{sha[:12]}"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if sys.version_info >= (3, 12) or hasattr(tarfile, "data_filter"):
            tar.extractall(tree, filter="data")
        else:  # pragma: no cover - Python 3.11 before 3.11.4
            tar.extractall(tree)  # noqa: S202 - our own repository's archive
    if not (tree / "functions" / "agents" / agent / "__init__.py").is_file():
        shutil.rmtree(tree, ignore_errors=True)
        raise UsageError(f"--candidate {ref}: the tree at {sha[:12]} has no agent {agent!r}")
    return Candidate("git", {"tree": str(tree)}, f"git {ref} ({sha[:12]})", tree=tree)


def parse_candidate(agent: str, text: str) -> Candidate:
    """The candidate ``text`` names for ``agent``; :class:`UsageError` if none."""
    from functions.agents import agent_names

    if agent not in agent_names():
        raise UsageError(f"--agent {agent}: no such agent (agents: {', '.join(agent_names())})")
    if not text.strip():
        raise UsageError("--candidate is empty")
    if "=" in text and not Path(text).exists():
        return _overrides(agent, text)
    path = Path(text)
    if path.is_dir():
        check_package(agent, path.resolve())
        return Candidate("path", {"package_dir": str(path.resolve())}, f"package {path}")
    candidate = _git_ref(agent, text)
    if candidate is None:
        raise UsageError(
            f"--candidate {text}: not a field=value change, an agent package directory or a git ref"
        )
    return candidate

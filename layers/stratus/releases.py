"""An agent's release: what one deployed version of it is, as a content hash.

``AgentSpec.version`` is what a person calls a version; a *release* is what
actually runs: the agent package's code and prompt files, its tools' argument
schemas, its output schema, its model tier and the models that tier resolves to,
its limits, session policy and routing, and the budget policy it is held to. Any
change to one of them is a new release, whether or not someone bumped
``version``, and two builds of the same content are the same release.

:func:`manifest` gathers those inputs into one JSON-able document (prompt and code
files are kept by content, so two manifests can be compared line by line);
:func:`release_id` is the hash of that document; :func:`changes` says what differs
between two manifests, for ``stratus releases`` and for a release gate's log.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stratus.agents import AgentSpec
from stratus.config import Settings

#: Bumped when the manifest's shape changes (so the same content hashes alike only
#: within one format).
MANIFEST_FORMAT = 1
#: Directories of an agent package that are not part of what runs.
EXCLUDED_DIRS = frozenset({"evals", "__pycache__", "tests"})
#: Files of an agent package that are part of what runs (code and prompts).
INCLUDED_SUFFIXES = frozenset({".py", ".md", ".txt", ".json", ".yaml", ".yml"})
#: Settings that are the agent's budget policy.
BUDGET_POLICY = (
    "budget_tenant_daily_usd",
    "budget_tenant_monthly_usd",
    "budget_agent_daily_usd",
    "budget_global_daily_usd",
    "budget_task_usd",
    "budget_alert_thresholds",
    "budget_downgrade_at",
)


def package_dir(spec: AgentSpec) -> Path:
    """The agent's package: the directory that holds its prompt directory."""
    directory = spec.prompt_dir
    while directory.name != spec.name and directory.parent != directory:
        directory = directory.parent
    return directory if directory.name == spec.name else spec.prompt_dir.parent


def package_files(root: Path) -> dict[str, str]:
    """Relative path -> text of every code and prompt file under ``root``, sorted."""
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or path.suffix not in INCLUDED_SUFFIXES:
            continue
        if any(part in EXCLUDED_DIRS for part in relative.parts[:-1]):
            continue
        files[relative.as_posix()] = path.read_text(encoding="utf-8")
    return files


def _json_value(value: Any) -> Any:
    """Decimals, tuples and paths as plain JSON (a stable rendering for hashing)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def manifest(
    spec: AgentSpec, settings: Settings, *, files: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Everything that makes ``spec`` behave as it does under ``settings``."""
    source = dict(files) if files is not None else package_files(package_dir(spec))
    tools = {
        tool.name: {
            "description": tool.description,
            "parameters": tool.args.model_json_schema(),
            "resources": sorted(str(r) for r in tool.resources),
            "roles": None if tool.roles is None else sorted(tool.roles),
        }
        for tool in spec.tools
    }
    return _json_value(
        {
            "format": MANIFEST_FORMAT,
            "agent": spec.name,
            "version": spec.version,
            "prompt_version": spec.prompt_version,
            "tier": spec.tier,
            "models": list(settings.model_chain(spec.tier)),
            "tools": tools,
            "output_schema": None
            if spec.output_schema is None
            else spec.output_schema.model_json_schema(),
            "limits": spec.limits.model_dump(mode="json"),
            "sessions": None if spec.sessions is None else spec.sessions.model_dump(mode="json"),
            "memory": None if spec.memory is None else spec.memory.model_dump(mode="json"),
            "guardrails": spec.guardrails.model_dump(mode="json"),
            "allow_downgrade": spec.allow_downgrade,
            "response_cache_ttl_s": spec.response_cache_ttl_s,
            "workflow": spec.workflow,
            "routes": dict(sorted(spec.routes.items())),
            "budget_policy": {name: getattr(settings, name) for name in BUDGET_POLICY},
            "files": source,
        }
    )


def release_id(document: Mapping[str, Any]) -> str:
    """``r-`` and the first 12 hex digits of the manifest's SHA-256 (canonical JSON)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "r-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def release_of(spec: AgentSpec, settings: Settings) -> str:
    return release_id(manifest(spec, settings))


def _file_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            lines.append(f"file {name}: added")
            continue
        if after is None:
            lines.append(f"file {name}: removed")
            continue
        diff = list(
            difflib.unified_diff(
                before.splitlines(), after.splitlines(), f"a/{name}", f"b/{name}", lineterm="", n=0
            )
        )
        added = sum(1 for d in diff if d.startswith("+") and not d.startswith("+++"))
        removed = sum(1 for d in diff if d.startswith("-") and not d.startswith("---"))
        lines.append(f"file {name}: +{added} -{removed} lines")
        lines.extend(f"    {d}" for d in diff[2:])
    return lines


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two manifests, one line per change (file diffs indented)."""
    lines: list[str] = []
    for key in sorted((set(old) | set(new)) - {"files", "tools"}):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    old_tools, new_tools = old.get("tools") or {}, new.get("tools") or {}
    for name in sorted(set(old_tools) | set(new_tools)):
        if name not in old_tools:
            lines.append(f"tool {name}: added")
        elif name not in new_tools:
            lines.append(f"tool {name}: removed")
        elif old_tools[name] != new_tools[name]:
            what = [
                k for k in sorted(new_tools[name]) if old_tools[name].get(k) != new_tools[name][k]
            ]
            lines.append(f"tool {name}: {', '.join(what)} changed")
    lines += _file_changes(old.get("files") or {}, new.get("files") or {})
    return lines

"""Release identity: a content hash of everything that makes an agent behave as it does."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, Field

from functions.agents import load_agent, load_all
from stratus.agents import Tool
from stratus.config import Settings
from stratus.releases import changes, manifest, package_dir, package_files, release_id, release_of

SETTINGS = Settings(tier_fast="gpt-5-mini", tier_smart="gpt-5", tier_fast_fallbacks="")


def test_the_same_content_is_the_same_release_and_every_shipped_agent_has_its_own() -> None:
    releases = {name: release_of(spec, SETTINGS) for name, spec in load_all().items()}
    assert releases == {name: release_of(spec, SETTINGS) for name, spec in load_all().items()}
    assert len(set(releases.values())) == len(releases)
    assert all(r.startswith("r-") and len(r) == 14 for r in releases.values())


def test_a_prompt_edit_is_a_new_release_and_the_change_names_the_lines() -> None:
    spec = load_agent("triage")
    before = manifest(spec, SETTINGS)
    files = dict(before["files"])
    prompt = "prompts/v1.md"
    files[prompt] = files[prompt].rstrip("\n") + "\nAlways answer in French.\n"
    after = manifest(spec, SETTINGS, files=files)
    assert release_id(after) != release_id(before)
    lines = changes(before, after)
    assert lines[0] == f"file {prompt}: +1 -0 lines"
    assert "    +Always answer in French." in lines


def test_a_model_or_budget_policy_change_is_a_new_release() -> None:
    spec = load_agent("triage")
    before = manifest(spec, SETTINGS)
    cheaper = manifest(spec, SETTINGS.model_copy(update={"tier_fast": "gpt-5-nano"}))
    assert release_id(cheaper) != release_id(before)
    assert changes(before, cheaper) == ['models: ["gpt-5-mini"] -> ["gpt-5-nano"]']
    from decimal import Decimal

    tighter = manifest(spec, SETTINGS.model_copy(update={"budget_task_usd": Decimal("0.25")}))
    assert release_id(tighter) != release_id(before)
    assert changes(before, tighter)[0].startswith("budget_policy: ")


def test_a_tool_schema_change_is_named() -> None:
    spec = load_agent("order_status")
    tool = spec.tools[0]

    class WiderArgs(BaseModel):
        order_id: str = Field(description="any id")
        include_history: bool = False

    wider = spec.model_copy(
        update={
            "tools": (
                Tool(
                    tool.name,
                    tool.description,
                    WiderArgs,
                    tool.fn,
                    tool.resources,
                    roles=tool.roles,
                ),
            )
        }
    )
    lines = changes(manifest(spec, SETTINGS), manifest(wider, SETTINGS))
    assert lines == [f"tool {tool.name}: parameters changed"]


def test_eval_suites_and_caches_are_not_part_of_a_release(tmp_path: Path) -> None:
    spec = load_agent("triage")
    root = package_dir(spec)
    assert root.name == "triage"
    copy = tmp_path / "triage"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__"))
    baseline = package_files(copy)
    assert "__init__.py" in baseline and "prompts/v1.md" in baseline
    assert not any(name.startswith("evals/") for name in baseline)
    (copy / "evals" / "more.json").write_text("{}", encoding="utf-8")
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.txt").write_text("cache", encoding="utf-8")
    assert package_files(copy) == baseline

"""The shape of the code base, checked: no import cycles, small modules, thin handlers, true docs.

These read the source as text (``ast``), so they are fast and import nothing.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Top-level packages and where their sources live.
PACKAGES = {
    "stratus": ROOT / "layers" / "stratus",
    "functions": ROOT / "functions",
    "infra": ROOT / "infra",
}
MAX_MODULE_LINES = 600
DOCS = ("README.md", "ARCHITECTURE.md")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module ``module`` imports at run time (at any depth), as a dotted name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            # Imports under TYPE_CHECKING never run; skip them by blanking the block.
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set(_imports(tree, module, path.name == "__init__.py"))
        graph[module] = {t for t in targets if t in MODULES and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines; split it by concern"


HANDLERS = sorted(m for m in MODULES if m.startswith("functions.handlers."))
FORBIDDEN_IN_HANDLERS = ("boto3", "botocore", "stratus.aws", "stratus.ddb")


@pytest.mark.parametrize("module", HANDLERS)
def test_handlers_reach_aws_only_through_the_runtime(module: str) -> None:
    path = MODULES[module]
    imported = set(_imports(ast.parse(path.read_text(encoding="utf-8")), module, False))
    bad = {
        i for i in imported if any(i == f or i.startswith(f + ".") for f in FORBIDDEN_IN_HANDLERS)
    }
    assert not bad, f"{module} imports {sorted(bad)}: AWS access belongs in a runtime adapter"


def test_the_import_scan_sees_function_level_imports() -> None:
    tree = ast.parse("def f():\n    import boto3\n    from stratus import aws\n")
    assert set(_imports(tree, "functions.handlers.x", False)) == {"boto3", "stratus.aws"}


# -- docs name only paths that exist -----------------------------------------------

#: Paths the docs name that exist only while something runs (documented as such).
RUNTIME_PATHS = (".stratus/",)
PATH_TOKEN = re.compile(r"(?:file://)?(\.?[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)*/?)")


def _tracked_roots() -> set[str]:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {f.split("/")[0] for f in files}


def _code_spans(text: str) -> Iterator[str]:
    fenced = re.compile(r"```[^\n]*\n(.*?)```", re.S)
    for block in fenced.findall(text):
        yield from block.split()
    for span in re.findall(r"`([^`\n]+)`", fenced.sub("", text)):
        yield from span.split()


def named_paths(text: str, roots: set[str]) -> set[str]:
    """Repo paths a document names in code: tokens whose first segment is a repo root entry."""
    found: set[str] = set()
    for token in _code_spans(text):
        token = token.strip("\"'(),;:")
        if any(c in token for c in "<>*{}$|=") or "://" in token.removeprefix("file://"):
            continue
        match = PATH_TOKEN.fullmatch(token)
        if not match:
            continue
        path = match.group(1)
        first = path.split("/")[0]
        if first in roots and ("/" in path or "." in first) and not path.startswith(RUNTIME_PATHS):
            found.add(path)
    return found


def test_named_paths_finds_paths_in_prose_and_code() -> None:
    text = "See `infra/nag.py` and `make dev`.\n```bash\ncat file://events/x.json\n```\n"
    assert named_paths(text, {"infra", "events"}) == {"infra/nag.py", "events/x.json"}


@pytest.mark.parametrize("doc", DOCS)
def test_docs_name_only_paths_that_exist(doc: str) -> None:
    path = ROOT / doc
    assert path.is_file(), f"{doc} is missing"
    roots = _tracked_roots() | {".venv"}
    missing = sorted(
        p for p in named_paths(path.read_text(encoding="utf-8"), roots) if not (ROOT / p).exists()
    )
    assert missing == [], f"{doc} names paths that do not exist: {missing}"

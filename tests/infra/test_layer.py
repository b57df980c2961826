"""The runtime layer's inputs: the committed requirements and the local bundlers."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from infra.paths import LAYER_REQUIREMENTS, REPO_ROOT

UV = REPO_ROOT / ".tools" / "bin" / "uv"
EXPORT = [
    "export",
    "--frozen",
    "--no-default-groups",
    "--no-emit-project",
    "--no-hashes",
    "--no-header",
    "--no-annotate",
    "--format",
    "requirements-txt",
]


def _names(lines: list[str]) -> set[str]:
    return {line.split("==")[0].split(";")[0].strip().lower() for line in lines}


@pytest.mark.skipif(not UV.is_file(), reason=f"uv not found at {UV}; cannot re-export uv.lock")
def test_layer_requirements_match_uv_lock() -> None:
    exported = subprocess.run(
        [str(UV), *EXPORT], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert LAYER_REQUIREMENTS.read_text(encoding="utf-8") == exported, (
        "layers/requirements.txt is stale; regenerate it with: .tools/bin/uv "
        + " ".join(EXPORT)
        + " > layers/requirements.txt"
    )


def test_layer_requirements_are_runtime_only() -> None:
    lines = [
        line
        for line in LAYER_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    names = _names(lines)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for dependency in project["project"]["dependencies"]:
        runtime = dependency.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
        assert runtime.lower() in names, runtime
    for tooling in ("aws-cdk-lib", "constructs", "cdk-nag", "pytest", "moto", "cfn-lint", "ruff"):
        assert tooling not in names
    assert all("==" in line for line in lines), "every layer dependency must be pinned"


@pytest.mark.infra
def test_markers_are_evaluated_for_lambda() -> None:
    from infra.constructs.bundling import requirements_for_lambda

    text = "\n".join(
        [
            "anyio==4.16.0",
            "h11==0.16.0 ; sys_platform != 'emscripten'",
            "jsfetch==1.0 ; python_full_version >= '3.12' and sys_platform == 'emscripten'",
            "newer==1.0 ; python_version >= '3.12'",
            "older==1.0 ; python_version < '3.12'",
            "x86==1.0 ; platform_machine == 'x86_64'",
        ]
    )
    assert requirements_for_lambda(text) == ["anyio==4.16.0", "h11==0.16.0", "newer==1.0"]


@pytest.mark.infra
def test_copy_bundler_keeps_the_package_path(tmp_path: Path) -> None:
    from infra.constructs.bundling import CopyBundler

    package = tmp_path / "src" / "functions"
    (package / "handlers" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "handlers" / "api.py").write_text("x = 1\n", encoding="utf-8")
    (package / "handlers" / "__pycache__" / "api.cpython-311.pyc").write_bytes(b"\0")
    out = tmp_path / "out"
    out.mkdir()

    from aws_cdk import DockerImage

    assert CopyBundler(package).try_bundle(str(out), image=DockerImage.from_registry("x"))
    assert (out / "functions" / "handlers" / "api.py").is_file()
    assert not list(out.rglob("__pycache__"))


@pytest.mark.infra
def test_layer_install_targets_lambda() -> None:
    from infra.constructs.bundling import _install_command

    command = _install_command(Path("req.txt"), Path("out/python"))
    joined = " ".join(command)
    assert "--python-version 3.14" in joined
    assert "--no-deps" in command
    assert "manylinux2014_aarch64" in joined or "aarch64-manylinux2014" in joined
    assert "--only-binary=:all:" in command or ":all:" in command

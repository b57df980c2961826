"""Local (Docker-free) bundlers for the Lambda assets.

CDK asks an ``ILocalBundling`` first and only falls back to Docker if it returns
False; these never do. Wheels are fetched for the Lambda platform (Linux arm64,
CPython 3.14) with ``pip --platform ... --only-binary=:all:``, so the build
machine's OS, CPU and Python version do not matter. Nothing here runs unless a
stack is really bundled (``cdk synth``/``deploy``); tests skip bundling.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import DockerImage, ILocalBundling

from infra.paths import REPO_ROOT

LAMBDA_PYTHON_VERSION = "3.14"
LAMBDA_PLATFORM = "manylinux2014_aarch64"
UV_PLATFORM = "aarch64-manylinux2014"
UV_BINARY_ONLY = ("--only-binary", ":all:")
#: What Lambda's Python 3.14 arm64 runtime reports for PEP 508 environment markers.
LAMBDA_MARKER_ENVIRONMENT: dict[str, str] = {
    "implementation_name": "cpython",
    "implementation_version": "3.14.0",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.14.0",
    "python_version": LAMBDA_PYTHON_VERSION,
    "sys_platform": "linux",
}
#: Never shipped: caches and bytecode from the build machine's Python.
IGNORED_GLOBS = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache")
IGNORED = shutil.ignore_patterns(*IGNORED_GLOBS)


class BundlingError(RuntimeError):
    """A local bundling step failed; the message says what to install or fix."""


def _marker_class() -> Any:
    """``packaging.markers.Marker``, or pip's vendored copy when only pip is present."""
    for module in ("packaging.markers", "pip._vendor.packaging.markers"):
        try:
            return importlib.import_module(module).Marker
        except ImportError:
            continue
    return None


def requirements_for_lambda(text: str) -> list[str]:
    """Requirement lines that apply on Lambda, markers evaluated for Lambda.

    pip evaluates environment markers against the interpreter running it (the
    build machine's 3.11), not ``--python-version``; a dependency limited to
    ``python_version >= '3.12'`` would silently be left out. So the markers are
    evaluated here against the Lambda runtime and stripped.
    """
    marker_class = _marker_class()
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip():
            if marker_class is None:
                raise BundlingError("evaluating requirement markers needs 'packaging' or pip")
            if not marker_class(marker.strip()).evaluate(LAMBDA_MARKER_ENVIRONMENT):
                continue
        lines.append(requirement.strip())
    return lines


def _install_command(requirements: Path, target: Path) -> list[str]:
    """pip from this interpreter if it has one, else uv (uv-made venvs have no pip)."""
    common = ["--target", str(target), "--python-version", LAMBDA_PYTHON_VERSION]
    # uv.lock already resolved and pinned every transitive dependency: --no-deps.
    common += ["--no-deps", "--quiet", "-r", str(requirements)]
    if importlib.util.find_spec("pip") is not None:
        return [
            *(sys.executable, "-m", "pip", "install", "--disable-pip-version-check"),
            *("--platform", LAMBDA_PLATFORM, "--implementation", "cp"),
            "--only-binary=:all:",
            # .pyc files compiled by the build machine's Python are useless on 3.14.
            "--no-compile",
            *common,
        ]
    uv = shutil.which("uv") or str(REPO_ROOT / ".tools" / "bin" / "uv")
    if Path(uv).is_file():
        # uv spells the platform as a target triple and never compiles by default.
        return [uv, "pip", "install", "--python-platform", UV_PLATFORM, *UV_BINARY_ONLY, *common]
    raise BundlingError(
        "bundling the runtime layer needs pip or uv: install pip into this "
        f"interpreter ({sys.executable}) or put uv on PATH"
    )


def pip_install_for_lambda(requirements: Path, target: Path) -> None:
    """Install ``requirements`` into ``target`` as Lambda (arm64, CPython 3.14) needs them."""
    lines = requirements_for_lambda(requirements.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="stratus-layer-") as tmp:
        resolved = Path(tmp) / "requirements.lambda.txt"
        resolved.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            subprocess.run(_install_command(resolved, target), check=True)  # noqa: S603
        except (OSError, subprocess.CalledProcessError) as exc:
            raise BundlingError(f"installing the layer dependencies failed: {exc}") from exc
    # Console scripts (openai, dotenv, ...) are never run inside Lambda.
    shutil.rmtree(target / "bin", ignore_errors=True)


def copy_package(source: Path, destination: Path) -> None:
    """Copy a Python package tree without caches or compiled files."""
    shutil.copytree(source, destination, ignore=IGNORED, dirs_exist_ok=True)


@jsii.implements(ILocalBundling)
class LayerBundler:
    """Builds the layer: ``<out>/python/`` = pinned dependencies + the ``stratus`` package."""

    def __init__(self, requirements: Path, package_dir: Path) -> None:
        self.requirements = requirements
        self.package_dir = package_dir

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        site = Path(output_dir) / "python"
        site.mkdir(parents=True, exist_ok=True)
        pip_install_for_lambda(self.requirements, site)
        copy_package(self.package_dir, site / self.package_dir.name)
        return True


@jsii.implements(ILocalBundling)
class CopyBundler:
    """Copies one package into ``<out>/<package name>/`` so its import path survives."""

    def __init__(self, package_dir: Path) -> None:
        self.package_dir = package_dir

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        copy_package(self.package_dir, Path(output_dir) / self.package_dir.name)
        return True

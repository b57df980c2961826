"""The release on the local cloud: ``stratus releases`` reads what the agent's function
serves (its ``/v1/health``), and the same release is on its answers and its jobs."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra import cli
from infra.local.cloud import LocalCloud
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


def _http(cloud: LocalCloud, method: str, path: str, body: Any = None) -> dict[str, Any]:
    facts = cloud.facts
    assert facts is not None
    request = urllib.request.Request(
        f"{facts.api_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {facts.demo_tenant_key}",
            "Content-Type": "application/json",
        },
        method=method,
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def test_releases_lists_what_the_local_function_serves_and_answers_carry_it(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    assert cloud.facts is not None
    state = tmp_path / "local.json"
    state.write_text(cloud.facts.to_json())
    parser = cli.build_parser() if _wired() else None
    from infra import releases_cli

    out = io.StringIO()
    args = _parse(parser, ["releases", "--agent", "triage", "--state-file", str(state), "--json"])
    assert releases_cli.main(args, out) == 0
    listed = json.loads(out.getvalue())
    (function,) = listed["functions"]
    release = function["release"]
    assert release and release.startswith("r-") and function["prompt_version"] == "v1"

    answer = _http(cloud, "POST", "/v1/agents/triage/invoke", {"input": "Where is A-1001?"})
    assert answer["agent"]["release"] == release
    assert answer["agent"]["prompt_version"] == "v1"

    submitted = _http(cloud, "POST", "/v1/jobs", {"agent": "triage", "input": "Hi there"})
    job_id = submitted["job_id"]
    done = wait_for(
        lambda: (job := _http(cloud, "GET", f"/v1/jobs/{job_id}"))["status"] == "succeeded" and job,
        timeout=60,
    )
    assert (done["release"], done["prompt_version"]) == (release, "v1")


def _wired() -> bool:
    """Whether ``infra.cli`` has ``releases`` (the lead wires it); else this module's parser."""
    import argparse

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return "releases" in subparsers.choices


def _parse(parser: Any, argv: list[str]) -> Any:
    import argparse

    from infra import releases_cli

    if parser is None:
        parser = argparse.ArgumentParser(prog="stratus")
        releases_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)

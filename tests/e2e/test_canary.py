"""``stratus canary`` and ``stratus rollback`` against a running local cloud.

One local cloud (ephemeral ports, its own state file, its own fake model). The canary
CLI talks to it as it talks to ``stratus dev``: through the facts file and the control
API on the AWS front; the traffic is real HTTP through the gateway (``--drive``). A
candidate that costs more per task than the gate allows (``tier=smart``: the smart
model costs several times the fast one) is rolled back and, afterwards, no answer
comes from it; a harmless prompt rewording (``prompt_version=v2``) is promoted and then
serves every request.
"""

from __future__ import annotations

import argparse
import io
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import canary_cli, rollback_cli
from infra.local.cloud import LocalCloud
from stratus.config import Settings
from tests.e2e.helpers import offline_environ

pytestmark = pytest.mark.xdist_group("local-cloud")

FAST, SMART = Settings().tier_fast, Settings().tier_smart


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    state = tmp_path_factory.mktemp("canary") / "local.json"
    with LocalCloud(
        api_port=0,
        aws_port=0,
        state_file=state,
        log_sink=lambda line: None,
        environ=offline_environ(),
        sweep_interval_s=0,
    ) as running:
        running.state_path = state  # type: ignore[attr-defined]
        yield running


def _run(cloud: LocalCloud, module: Any, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers())
    args = parser.parse_args([*argv, "--state-file", str(cloud.state_path)])  # type: ignore[attr-defined]
    out = io.StringIO()
    try:
        code = module.run(args, out=out)
    except canary_cli.UsageError as error:
        return 2, str(error)
    return code, out.getvalue()


def _invoke(cloud: LocalCloud) -> dict[str, Any]:
    facts = cloud.facts
    assert facts is not None
    request = urllib.request.Request(
        f"{facts.api_url}/v1/agents/triage/invoke",
        data=json.dumps({"input": "Where is my order A-1001?"}).encode(),
        headers={
            "Authorization": f"Bearer {facts.demo_tenant_key}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def _function(cloud: LocalCloud) -> str:
    assert cloud.facts is not None
    return cloud.facts.functions["agent:triage"]


#: Latency on a shared 2-core machine is noise: the gate judges errors and cost here.
GATE = (
    *("--weight", "50", "--for", "0s", "--interval", "0.2s", "--min-requests", "8"),
    *("--max-p90-latency-ratio", "10"),
)


def test_a_candidate_that_costs_too_much_per_task_is_rolled_back(cloud: LocalCloud) -> None:
    assert cloud.runtime is not None
    before = _invoke(cloud)
    assert before["model"] == FAST
    code, out = _run(
        cloud,
        canary_cli,
        "canary",
        "--agent",
        "triage",
        "--candidate",
        "tier=smart",
        *GATE,
        "--drive",
        "20",
    )
    assert code == 1, out
    assert "pre-traffic evals: promote" in out  # the fake model answers both alike
    verdict = next(line for line in out.splitlines() if line.startswith("rolled back"))
    assert verdict.startswith("rolled back tier=smart: rollback: ")
    assert "cost_per_task: $" in verdict and "p90_latency" not in verdict
    # The candidate is gone from both functions: nothing of it is served any more.
    for key in ("agent:triage", "worker:triage"):
        assert cloud.facts is not None
        assert cloud.runtime.versions(cloud.facts.functions[key])["versions"] == ["$LATEST"]
    after = [_invoke(cloud) for _ in range(6)]
    assert {a["model"] for a in after} == {FAST}
    assert all(a["cost_usd"] == pytest.approx(before["cost_usd"], rel=0.5) for a in after)


def test_unknown_candidates_exit_2_before_anything_changes(cloud: LocalCloud) -> None:
    assert cloud.runtime is not None
    for candidate, message in (
        ("tier=huge", "not a valid triage"),
        ("prompt_version=v9", "not a valid triage"),
        ("colour=red", "'colour' cannot be changed"),
        ("no-such-ref-xyz", "not a field=value change"),
    ):
        code, text = _run(
            cloud, canary_cli, "canary", "--agent", "triage", "--candidate", candidate
        )
        assert code == 2 and message in text, text
    code, text = _run(cloud, canary_cli, "canary", "--agent", "nobody", "--candidate", "tier=smart")
    assert code == 2 and "no such agent" in text
    assert cloud.runtime.versions(_function(cloud))["versions"] == ["$LATEST"]


def test_a_good_candidate_is_promoted_and_then_serves_all_traffic(cloud: LocalCloud) -> None:
    assert cloud.runtime is not None and cloud.fake_model is not None
    code, out = _run(
        cloud,
        canary_cli,
        "canary",
        "--agent",
        "triage",
        "--candidate",
        "prompt_version=v2",
        *GATE,
        "--drive",
        "20",
    )
    assert code == 0, out
    assert "promoted prompt_version=v2: promote:" in out
    versions = cloud.runtime.versions(_function(cloud))
    assert versions["primary"] != "$LATEST" and versions["versions"] == [versions["primary"]]
    cloud.runtime.version_stats(_function(cloud), reset=True)
    after = [_invoke(cloud) for _ in range(5)]
    assert {a["model"] for a in after} == {FAST}
    stats = cloud.runtime.version_stats(_function(cloud))
    assert list(stats) == [versions["primary"]] and stats[versions["primary"]]["requests"] == 5
    # Rolling back with no candidate left changes nothing and says so.
    code, out = _run(cloud, rollback_cli, "rollback", "--agent", "triage")
    assert code == 0 and "no candidate" in out


def test_rollback_drops_a_candidate_by_hand(cloud: LocalCloud, tmp_path: Path) -> None:
    assert cloud.runtime is not None
    control = canary_cli.Cloud(cloud.state_path)  # type: ignore[attr-defined]
    control.canary("triage", "", {"candidate": {"overrides": {"tier": "smart"}}, "label": "x"})
    control.canary("triage", "weights", {"weight": 100})
    assert _invoke(cloud)["model"] == SMART
    code, out = _run(cloud, rollback_cli, "rollback", "--agent", "triage")
    assert code == 0 and "dropped" in out, out
    assert {_invoke(cloud)["model"] for _ in range(3)} == {FAST}

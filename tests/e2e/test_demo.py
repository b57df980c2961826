"""``stratus demo``: the walk-through passes, and drives a local cloud that is already running.

The demo is the README's first command; this keeps it honest in CI. With a local
cloud running (its state file present and its API answering), the demo drives that
cloud instead of starting its own, so what it did stays there for ``stratus eval
capture`` and ``stratus review``; run twice, it passes twice.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.cloud import LocalCloud
from infra.local.demo import run_demo, running_cloud
from tests.e2e.helpers import offline_environ

pytestmark = pytest.mark.xdist_group("local-cloud")


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("demo") / "local.json"
    with LocalCloud(
        api_port=0,
        aws_port=0,
        state_file=path,
        log_sink=lambda line: None,
        environ=offline_environ(),
    ):
        yield path


def test_demo_drives_the_running_cloud_and_passes_twice(state_file: Path) -> None:
    facts = running_cloud(state_file)
    assert facts is not None
    for _ in range(2):
        out = io.StringIO()
        code = run_demo(out, state_file=state_file)
        text = out.getvalue()
        assert code == 0, text
        assert f"already running at {facts.api_url}" in text
        assert "All demo steps passed." in text


def test_after_the_demo_its_answers_are_captured_and_stratus_eval_accepts_them(
    state_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The eval issue's "Done when": ``make demo`` drives a running local cloud (``stratus
    dev``), then ``stratus eval capture`` writes cases that ``stratus eval`` accepts and
    passes (on the cloud the test above ran the demo on)."""
    from tests.e2e.test_eval_capture import _capture, _eval_suite, _ids, _verdicts

    facts = running_cloud(state_file)
    assert facts is not None
    if not _ids_of_demo(state_file):  # run alone: the demo has not run on this cloud yet
        assert run_demo(io.StringIO(), state_file=state_file) == 0
    api = ["--api", facts.api_url, "--key", facts.demo_tenant_key]
    captured = {}
    for agent in ("triage", "order_status", "returns", "researcher"):
        out = tmp_path / f"{agent}.json"
        assert _capture(state_file, "--agent", agent, "--out", str(out)) == 0, agent
        captured[agent] = _ids(out)
        result = _eval_suite(tmp_path, out, *api)
        assert result["exit_code"] == 0, agent
        assert _verdicts(result) == dict.fromkeys(captured[agent], True), agent
        assert facts.demo_tenant_id not in out.read_text()
    # On a running cloud the demo keeps its support session: its turns are captured too.
    support = tmp_path / "support.json"
    assert _capture(state_file, "--agent", "support", "--out", str(support)) == 0
    captured["support"] = _ids(support)
    capsys.readouterr()
    assert all(captured.values())


def _ids_of_demo(state_file: Path) -> bool:
    """Whether the demo already left triage answers to capture on this cloud."""
    from tests.e2e.test_eval_capture import _capture

    probe = state_file.parent / "probe.json"
    return _capture(state_file, "--agent", "triage", "--out", str(probe)) == 0


def test_a_stale_or_broken_state_file_is_not_a_running_cloud(tmp_path: Path) -> None:
    assert running_cloud(tmp_path / "missing.json") is None
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    assert running_cloud(broken) is None
    stale = tmp_path / "stale.json"
    state = {
        "api_url": "http://127.0.0.1:9",  # discard port: nothing answers
        "aws_endpoint_url": "http://127.0.0.1:9",
        "region": "us-east-1",
        "demo_tenant_key": "sk-stratus-x",
        "demo_tenant_id": "t",
        "model_base_url": "http://127.0.0.1:9/v1",
        "fake_model": True,
        "tables": {},
        "queue_urls": {},
        "state_machine_arns": {},
        "functions": {},
    }
    stale.write_text(json.dumps(state), encoding="utf-8")
    assert running_cloud(stale) is None

"""The release of a process's agents (composition), what counts as a task error, and the
task metrics' EMF shape (exactly ``agent`` and ``release``, whatever the service name)."""

from __future__ import annotations

import json

import pytest

from functions.agents import load_agent
from stratus import releases
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.errors import BudgetExceeded, InputTooLarge, ModelUnavailable, SessionBusy
from stratus.release_tags import emit_task, is_task_error


def test_the_served_agent_takes_stratus_release_and_the_others_are_hashed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    triage, returns = load_agent("triage"), load_agent("returns")
    calls: list[str] = []
    real = releases.release_of

    def counting(spec, settings):  # type: ignore[no-untyped-def]
        calls.append(spec.name)
        return real(spec, settings)

    monkeypatch.setattr(releases, "release_of", counting)
    runtime = Runtime(Settings(agent="triage", release="r-0123456789ab"))
    assert runtime.release_for(triage) == "r-0123456789ab"
    assert runtime.release_for(returns) == real(returns, runtime.settings)
    assert runtime.release_for(returns) == runtime.release_for(returns)
    assert calls == ["returns"]  # once per process; the served agent's is given

    # Without STRATUS_RELEASE the served agent's release is its content hash.
    hashed = Runtime(Settings(agent="triage")).release_for(triage)
    assert hashed == real(triage, Settings(agent="triage")) and hashed.startswith("r-")
    assert Runtime(Settings(agent="triage")).invoke_service(triage).release == hashed


def test_refusals_are_not_task_errors_and_failures_are() -> None:
    for refusal in (InputTooLarge("x"), BudgetExceeded("x"), SessionBusy("x")):
        assert not is_task_error(refusal)
    assert is_task_error(ModelUnavailable("x"))
    assert is_task_error(RuntimeError("boom"))


def test_task_metrics_have_exactly_agent_and_release(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from decimal import Decimal

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "stratus")
    emit_task("triage", "r-0123456789ab", cost_usd=Decimal("0.00125"), failed=False)
    emit_task("triage", "", cost_usd=None, failed=True)
    ok, failed = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    for doc in (ok, failed):
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Stratus"
        assert directive["Dimensions"] == [["agent", "release"]]
        assert "service" not in doc
    assert (ok["release"], ok["Tasks"], ok["TaskErrors"]) == ("r-0123456789ab", [1.0], [0.0])
    assert ok["CostMicroUSD"] == [1250.0]
    assert (failed["release"], failed["TaskErrors"]) == ("unknown", [1.0])
    assert "CostMicroUSD" not in failed

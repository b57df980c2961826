"""Reservations that cannot leak (a real SIGKILL between reserve and settle) and a job's
cap that holds under parallel steps, through the real gateway, moto and the fake model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.local.fake_model import FakeModelServer, Fault, Reply
from stratus.agents import CallScope
from stratus.budgets import from_nano
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.errors import BudgetExceeded, JobBudgetExceeded
from stratus.gateway_stores.ports import budget_item
from stratus.tokens import estimate_prompt_tokens
from tests.functional.gateway_support import Clock, atomic_moto, make_rig
from tests.tables import create_tables

__all__ = ["atomic_moto"]

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "Summarise the quarterly report in one line."}]
#: gpt-5-mini at $2 per million output tokens: a worst case of about $0.1 per call.
MAX_OUTPUT = 50_000
TASK = "TASK#tenant-a#job#job-kill"

#: The worker: one model call through the runtime's gateway, with 5 s left on its clock.
CHILD = f"""
from stratus.agents import CallScope
from stratus.composition import Runtime

class Left:
    def remaining_s(self):
        return 5.0

Runtime.from_env().gateway.chat(
    model="gpt-5-mini",
    messages={MESSAGES!r},
    max_output_tokens={MAX_OUTPUT},
    deadline=Left(),
    scope=CallScope("tenant-a", "triage", "job", "job-kill", step="plan"),
    agent="triage",
)
"""


@pytest.fixture
def moto_server(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto in server mode (a child process can reach it), with the stack's tables."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    names = create_tables(boto3.client("dynamodb"))
    yield {"endpoint": endpoint, "tables": names}
    server.stop()


@dataclass(frozen=True)
class Left:
    seconds: float

    def remaining_s(self) -> float:
        return self.seconds


def _task_item() -> dict[str, Any]:
    raw = boto3.client("dynamodb").get_item(
        TableName=os.environ["STRATUS_BUDGETS_TABLE"],
        Key={"pk": {"S": TASK}},
        ConsistentRead=True,
    )
    from stratus.ddb import unmarshal

    return unmarshal(raw.get("Item"))


def test_a_call_killed_between_reserve_and_settle_gives_its_reservation_back(
    moto_server: dict[str, Any], fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "STRATUS_BUDGETS_TABLE": moto_server["tables"]["budgets"],
        "STRATUS_BUDGET_TASK_USD": "0.15",  # room for one worst case, not for two
        "STRATUS_BUDGET_HOLD_MARGIN_S": "1",
        "STRATUS_DEADLINE_MARGIN_S": "0",
        "STRATUS_TIER_FAST_FALLBACKS": "",
        "STRATUS_OPENAI_API_KEY": "sk-test-kill",
        "OPENAI_BASE_URL": fake_model.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The fake model holds the worker's request: it is between reserve and settle.
    fake_model.inject(Fault(status=200, delay_s=15, times=1))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'layers'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(3000):  # up to 30 s for the interpreter to start and reserve
            if fake_model.call_count() or child.poll() is not None:
                break
            time.sleep(0.01)
        assert fake_model.call_count() == 1, child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)  # a timeout or an OOM: no settlement, no release
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    leaked = budget_item(_task_item())
    (entry,) = leaked.open
    assert leaked.committed == entry.amount and leaked.spent == 0

    clock = Clock(now=entry.expires_at - 2)  # the worker's deadline has not passed yet
    runtime = Runtime(Settings(), clock=clock)
    gateway = runtime.gateway
    fake_model.script(Reply(content="ok", usage={"prompt_tokens": 20, "completion_tokens": 5}))

    def call() -> Any:
        return gateway.chat(
            model="gpt-5-mini",
            messages=MESSAGES,
            max_output_tokens=MAX_OUTPUT,
            deadline=Left(5.0),
            scope=CallScope("tenant-a", "triage", "job", "job-kill", step="retry"),
            agent="triage",
        )

    with pytest.raises(BudgetExceeded):  # while the dead call may still settle: held
        call()
    assert fake_model.call_count() == 1
    clock.now = entry.expires_at + 1  # past its expiry: the refusal gives it back
    result = call()
    assert result.message.content == "ok"
    item = budget_item(_task_item())
    assert item.open == ()
    cost = runtime.prices.cost("gpt-5-mini", result.usage)
    assert from_nano(item.committed) == from_nano(item.spent) == cost  # the dead one is gone
    assert item.committed < entry.amount  # committed went back down
    # The tenant's day and month items had the dead entry too: the sweep gives it back.
    report = gateway.budgets.sweep_expired(tenant_ids=["tenant-a"], agents=["triage"])
    assert report.released == 2 and report.released_usd == from_nano(entry.amount) * 2
    assert gateway.budgets.sweep_expired(tenant_ids=["tenant-a"]).released == 0


def test_parallel_steps_of_one_job_cannot_overshoot_its_cap(
    cloud: dict[str, Any], fake_model: FakeModelServer, atomic_moto: None
) -> None:
    rig = make_rig(cloud, tier_fast_fallbacks="", budget_task_usd=None)
    bound = estimate_prompt_tokens(MESSAGES)
    reservation = rig.gateway.worst_case(("gpt-5-mini",), bound, 1000)
    steps, room_for = 8, 3
    cap = reservation * room_for + reservation / 2  # room for 3 steps, not 4
    # Every step really costs its worst case: no settlement frees room for a 4th.
    usage = {"prompt_tokens": bound, "completion_tokens": 1000}
    fake_model.script(*[Reply(content="done", usage=usage) for _ in range(steps)])
    fake_model.inject(Fault(status=200, delay_s=0.3, times=-1))  # all in flight together
    start = threading.Barrier(steps)

    def step(i: int) -> str:
        start.wait()
        scope = CallScope(
            "tenant-a", "triage", "job", "job-map", step=f"research-{i}", max_cost_usd=cap
        )
        try:
            rig.gateway.chat(
                model="gpt-5-mini",
                messages=MESSAGES,
                max_output_tokens=1000,
                scope=scope,
                step=scope.step,
                agent="triage",
            )
        except JobBudgetExceeded as exc:
            assert exc.details["max_cost_usd"] == float(cap)
            return exc.code
        return "ok"

    with ThreadPoolExecutor(max_workers=steps) as pool:
        outcomes = list(pool.map(step, range(steps)))

    assert outcomes.count("ok") == room_for
    assert outcomes.count("job_budget_exceeded") == steps - room_for
    assert fake_model.call_count() == room_for
    key = "TASK#tenant-a#job#job-map"
    spent = rig.spent(key)
    assert spent == reservation * room_for
    assert spent <= cap  # never over the cap: reservations are upper bounds
    assert rig.committed(key) == spent  # nothing left open

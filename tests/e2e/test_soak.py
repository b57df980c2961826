"""The chaos soak, small: ~60 jobs through a local cloud while workers are killed and the
model fails (``make soak`` runs the full 1,000; see ``bench/soak.py``).

Half the jobs come over HTTP, half from a plain boto3 producer on the ingest
queue; a share is submitted twice. Workers are SIGKILLed while a job's model call
is in flight and right after the model answered (the call ledger's crash window);
the fake model answers 429, 500 and times out. The test first proves the chaos
really happened, then that nothing was lost, duplicated or billed twice.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.soak import SoakParams, run_soak
from bench.soak_report import render_table

pytestmark = pytest.mark.xdist_group("local-cloud")

SMALL = SoakParams(
    jobs=60,
    kills=4,
    faults_per_kind=1,
    worker_timeout_s=8,  # visibility 48 s; the sweep brings a killed worker's jobs back sooner
    wait_s=120.0,  # bounded; a killed batch's other records wait out its visibility (48 s)
    quiet_s=20.0,
    seed=10,
)


@pytest.fixture(scope="module")
def soak() -> dict[str, Any]:
    result = run_soak(SMALL)
    print(render_table(result))  # shown with -s, and in the report of a failure
    return result


def test_the_chaos_really_happened(soak: dict[str, Any]) -> None:
    f = soak["figures"]
    assert f["submitted_http"] == 30 and f["submitted_sqs"] == 30, f
    assert f["kills_before_answer"] >= 1 and f["kills_after_answer"] >= 1, f
    answers = f["model_answers_by_status"]
    assert answers.get("429", 0) >= 1 and answers.get("500", 0) >= 1, answers
    assert answers.get("499", 0) >= 1, answers  # a caller that timed out (or was killed)
    assert f["duplicates_submitted"] >= 1 and f["claimed_more_than_once"] >= 1, f
    # The after-answer kills paid once more on their redelivery, and were counted there.
    assert f["extra_provider_calls_in_crash_window"] >= 1, f


def test_nothing_lost_duplicated_or_billed_twice(soak: dict[str, Any]) -> None:
    f = soak["figures"]
    assert f["lost"] == 0, soak["problems"]
    assert f["second_jobs_from_redelivery"] == 0, f
    assert f["extra_provider_calls_outside_window"] == 0, soak["problems"]
    assert f["billed_twice"] == 0, soak["problems"]
    assert f["succeeded"] + f["failed"] + f["stuck"] + f["dead_lettered_at_ingest"] == 60, f


def test_nothing_stuck(soak: dict[str, Any]) -> None:
    # The lease sweep brings a killed worker's jobs back; the last delivery fails the rest.
    assert soak["figures"]["stuck"] == 0, soak["problems"]


def test_no_reservation_left_open(soak: dict[str, Any]) -> None:
    # Expired holds are given back by the sweep, and a finished job's at once.
    f = soak["figures"]
    assert f["reservations_open"] == 0, soak["open_reservations"]

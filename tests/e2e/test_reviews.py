"""Human review sampling end to end on the local cloud (dev stage: every answer sampled).

A job's answer is queued for review by the agent's worker, listed and graded over
HTTP and with ``stratus review``, and the agent's ``human_score`` moves with each
grade. A key without the ``admin`` scope is refused.
"""

from __future__ import annotations

import argparse
import datetime
import io
from collections.abc import Callable
from typing import Any

import pytest

from infra import review_cli
from infra.local.cloud import LocalCloud
from infra.local.demo import http
from stratus.tenants import TenantStore
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _finished_job(cloud: LocalCloud, text: str) -> str:
    facts = cloud.facts
    assert facts is not None
    auth = _auth(facts.demo_tenant_key)
    submitted = http("POST", f"{facts.api_url}/v1/jobs", {"agent": "triage", "input": text}, auth)
    assert submitted.status == 202, submitted.body
    job_id = str(submitted.body["job_id"])

    def done() -> bool:
        reply = http("GET", f"{facts.api_url}/v1/jobs/{job_id}", headers=auth)
        assert reply.body["status"] not in ("failed", "cancelled"), reply.body
        return bool(reply.body["status"] == "succeeded")

    wait_for(done, timeout=60)
    return job_id


def _review_of(cloud: LocalCloud, job_id: str) -> dict[str, Any]:
    facts = cloud.facts
    assert facts is not None

    def queued() -> dict[str, Any] | None:
        reply = http("GET", f"{facts.api_url}/v1/reviews", headers=_auth(facts.demo_tenant_key))
        assert reply.status == 200, reply.body
        return next((r for r in reply.body["reviews"] if r["source_id"] == job_id), None)

    review: dict[str, Any] = wait_for(queued, timeout=30)
    return review


def _cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="stratus")
    review_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    return review_cli.main(args, out=out), out.getvalue()


def _triage_score(cloud: LocalCloud) -> dict[str, Any] | None:
    facts = cloud.facts
    assert facts is not None
    reply = http(
        "GET",
        f"{facts.api_url}/v1/reviews",
        headers=_auth(facts.demo_tenant_key),
        body=None,
    )
    scores = [s for s in reply.body["human_score"] if s["agent"] == "triage"]
    return scores[0] if scores else None


def test_a_jobs_answer_is_queued_and_grades_move_the_human_score(
    cloud: LocalCloud, aws: Callable[[str], Any]
) -> None:
    facts = cloud.facts
    assert facts is not None
    before = _triage_score(cloud)
    job_id = _finished_job(cloud, "My invoice is charged twice, please refund one.")
    review = _review_of(cloud, job_id)
    assert (review["kind"], review["agent"], review["status"]) == ("job", "triage", "pending")
    assert "invoice" in review["input"] and review["output"]

    graded = http(
        "POST",
        f"{facts.api_url}/v1/reviews/{review['review_id']}",
        {"score": 1.0, "comment": "right category"},
        _auth(facts.demo_tenant_key),
    )
    assert graded.status == 200, graded.body
    score = graded.body["human_score"]
    reviewed_before = before["reviewed"] if before else 0
    assert score["agent"] == "triage" and score["reviewed"] == reviewed_before + 1
    again = http(
        "POST",
        f"{facts.api_url}/v1/reviews/{review['review_id']}",
        {"score": 0.0},
        _auth(facts.demo_tenant_key),
    )
    assert again.status == 409 and again.body["error"]["code"] == "already_reviewed"

    # A second answer, graded with the CLI (the local cloud's URL and key by default).
    second = _review_of(cloud, _finished_job(cloud, "The app crashes when I log in."))
    code, out = _cli(
        "review", "grade", second["review_id"], "--score", "0", "--api", facts.api_url,
        "--key", facts.demo_tenant_key,
    )  # fmt: skip
    assert code == 0, out
    assert f"graded {second['review_id']}: 0.000" in out
    after = _triage_score(cloud)
    assert after is not None and after["reviewed"] == score["reviewed"] + 1
    # The mean moved down: the same release, one more grade of 0.
    expected = (score["score"] * score["reviewed"]) / after["reviewed"]
    assert after["score"] == pytest.approx(expected, abs=1e-3)
    assert after["score"] < score["score"]

    code, shown = _cli(
        "review", "show", second["review_id"], "--api", facts.api_url, "--key",
        facts.demo_tenant_key,
    )  # fmt: skip
    assert code == 0 and "(reviewed)" in shown and "grade    0.000" in shown
    code, listing = _cli(
        "review", "list", "--status", "reviewed", "--agent", "triage", "--api", facts.api_url,
        "--key", facts.demo_tenant_key,
    )  # fmt: skip
    assert code == 0 and second["review_id"] in listing and "HumanScore triage" in listing

    # Each grade is a HumanScore data point, forwarded from the platform function's EMF
    # output to the local CloudWatch: its average is the grades' mean.
    now = datetime.datetime.now(datetime.UTC)
    cloudwatch = aws("cloudwatch")

    def points() -> list[dict[str, Any]]:
        stats = cloudwatch.get_metric_statistics(
            Namespace="Stratus",
            MetricName="HumanScore",
            Dimensions=[
                {"Name": "agent", "Value": "triage"},
                {"Name": "release", "Value": review["release"]},
            ],
            StartTime=now - datetime.timedelta(hours=1),
            EndTime=now + datetime.timedelta(minutes=5),
            Period=3600,
            Statistics=["SampleCount", "Minimum", "Maximum"],
        )["Datapoints"]
        total = sum(p["SampleCount"] for p in stats)
        return stats if total >= after["reviewed"] - reviewed_before else []

    stats = wait_for(points, timeout=20)
    assert min(p["Minimum"] for p in stats) == 0.0 and max(p["Maximum"] for p in stats) == 1.0


def test_a_key_without_admin_is_forbidden_over_http(cloud: LocalCloud) -> None:
    facts = cloud.facts
    assert facts is not None
    from infra.local.provision import LocalClients

    store = TenantStore(facts.tables["tenants"], LocalClients(facts.aws_endpoint_url).dynamodb)
    _, key = store.create("app-only", scopes=["invoke", "jobs"])
    reply = http("GET", f"{facts.api_url}/v1/reviews", headers=_auth(key))
    assert reply.status == 403
    assert reply.body["error"]["code"] == "forbidden"
    assert reply.body["error"]["details"] == {"missing_scope": "admin"}
    code, _ = _cli("review", "list", "--api", facts.api_url, "--key", key)
    assert code == 1


def test_the_cli_exits_2_when_no_api_answers(tmp_path: Any) -> None:
    code, _ = _cli("review", "list", "--api", "http://127.0.0.1:9", "--key", "sk-stratus-x")
    assert code == 2
    missing = tmp_path / "local.json"
    args = argparse.Namespace(api=None, key=None, facts=missing, action=None)
    assert review_cli.main(args, out=io.StringIO()) == 2

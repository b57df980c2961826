"""``EvalScore`` / ``EvalPassRate``: CloudWatch ``PutMetricData`` on moto, and Powertools EMF."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from stratus.evals import gate
from stratus.evals.checks import Observation
from stratus.evals.metrics import CloudWatchSink, EmfSink, EvalMetrics, publish
from stratus.evals.models import parse_suite
from stratus.evals.runner import CaseResult, SampleResult
from stratus.observability import NAMESPACE


def _verdict(agent: str, release: str, outcomes: list[bool]) -> gate.AgentVerdict:
    suite = parse_suite(
        {
            "agent": agent,
            "cases": [
                {"id": f"c{i}", "input": "x", "assertions": [{"type": "cost_at_most", "usd": 1}]}
                for i in range(len(outcomes))
            ],
        },
        "inline",
    )
    cases = [
        CaseResult(agent, case, [SampleResult(ok, observation=Observation(output="a"))])
        for case, ok in zip(suite.cases, outcomes, strict=True)
    ]
    return gate.judge(agent, [suite], cases, model="m", release=release, baseline=None)


def _statistic(client: object, name: str, agent: str, release: str) -> float:
    now = datetime.now(UTC)
    points = client.get_metric_statistics(  # type: ignore[attr-defined]
        Namespace=NAMESPACE,
        MetricName=name,
        Dimensions=[{"Name": "agent", "Value": agent}, {"Name": "release", "Value": release}],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1),
        Period=3600,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert len(points) == 1, points
    return float(points[0]["Maximum"])


@pytest.mark.usefixtures("aws_credentials")
def test_cloudwatch_sink_publishes_score_and_pass_rate_per_agent_and_release() -> None:
    verdicts = [
        _verdict("triage", "1.4.0", [True, True, True, False]),
        _verdict("returns", "2.0.0", [True, False]),
    ]
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="eu-west-1")
        sent = publish(verdicts, CloudWatchSink(client))
        assert [(m.agent, m.release) for m in sent] == [("triage", "1.4.0"), ("returns", "2.0.0")]
        assert _statistic(client, "EvalScore", "triage", "1.4.0") == 75.0
        assert _statistic(client, "EvalPassRate", "triage", "1.4.0") == 0.75
        assert _statistic(client, "EvalScore", "returns", "2.0.0") == 50.0
        assert _statistic(client, "EvalPassRate", "returns", "2.0.0") == 0.5
        listed = client.list_metrics(Namespace=NAMESPACE)["Metrics"]
        dims = {
            (m["MetricName"], tuple(sorted(d["Name"] for d in m["Dimensions"]))) for m in listed
        }
        assert dims == {
            ("EvalScore", ("agent", "release")),
            ("EvalPassRate", ("agent", "release")),
        }


def test_pass_rate_is_the_share_of_cases_passed_not_of_samples() -> None:
    verdict = _verdict("triage", "1", [True, False, False])
    assert verdict.pass_rate == pytest.approx(1 / 3)
    assert verdict.score == pytest.approx(33.33)


def test_emf_sink_prints_one_document_per_metric_with_agent_and_release() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        EmfSink().publish([EvalMetrics.of(_verdict("triage", "9", [True, False]))])
    documents = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    assert len(documents) == 2
    by_name = {}
    for doc in documents:
        directive = doc["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == NAMESPACE
        assert set(directive["Dimensions"][0]) >= {"agent", "release"}
        (metric,) = directive["Metrics"]
        by_name[metric["Name"]] = doc[metric["Name"]]
        assert (doc["agent"], doc["release"]) == ("triage", "9")
    assert by_name == {"EvalScore": [50.0], "EvalPassRate": [0.5]}  # EMF value lists

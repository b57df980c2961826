"""Observability in the template (issue 16): the stage's dashboard covers every agent,
queue and workflow; every alarm has an action on the operator topic; the anomaly, error
rate, latency, DLQ, workflow, breaker and budget alarms; the subscriptions of cdk.json.
(cdk-nag and cfn-lint run on the same templates in test_nag.py / test_cfn_lint.py.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.agents import load_agent, load_all
from infra.config import StageConfigError, cdk_json_context, load_stage, parse_stage
from infra.topology import queue_plans, workflow_plans
from tests.infra.conftest import STAGES, Synthesized, synth_context

pytestmark = pytest.mark.infra

AGENTS = sorted(load_all())


def _resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _flatten(value: Any) -> str:
    """A ``Fn::Join`` of strings and tokens as one string (tokens as ``<token>``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_flatten(part) for part in parts)
    return "<token>"


def _dashboard(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    (dashboard,) = _resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(_flatten(dashboard["Properties"]["DashboardBody"]))
    return dashboard, body


def _operator_topic(template: dict[str, Any]) -> str:
    (topic_id,) = [
        k
        for k, v in _resources(template, "AWS::SNS::Topic").items()
        if v["Properties"].get("TopicName") == f"stratus-{template['_stage']}-operators"
    ]
    return topic_id


@pytest.fixture(scope="module", params=STAGES)
def stage_template(request: pytest.FixtureRequest, synthesized: Synthesized) -> dict[str, Any]:
    return {**synthesized.templates[request.param], "_stage": request.param}


def test_the_dashboard_has_every_widget_for_every_agent_queue_and_workflow(
    stage_template: dict[str, Any],
) -> None:
    stage = stage_template["_stage"]
    dashboard, body = _dashboard(stage_template)
    assert dashboard["Properties"]["DashboardName"] == f"Stratus-{stage}"
    titles = {w["properties"].get("title") for w in body["widgets"] if w["type"] == "metric"}
    for agent in AGENTS:
        for suffix in (
            "requests and error rate",
            "latency p50/p90/p99",
            "cost per task and per hour (USD)",
            "tokens in/out/cached/reasoning",
            "cache and ledger hit rates, fallbacks",
        ):
            assert f"{agent}: {suffix}" in titles, (agent, suffix)
    for plan in queue_plans(load_stage(stage), load_all()):
        for suffix in ("depth", "age of oldest message", "DLQ depth"):
            assert f"Queue {plan.name}: {suffix}" in titles, (plan.name, suffix)
    workflows = [plan.agent for plan in workflow_plans(load_all())]
    assert workflows  # the researcher's supervised workflow
    for agent in workflows:
        assert f"Workflow {agent}: started, succeeded, failed, waiting for approval" in titles
    assert {"API 4XX / 5XX", "API latency", "Budget burn (% of the day's limit)"} <= titles

    text = json.dumps(body)
    for agent in AGENTS:  # the per-agent metrics, on the agent's (agent, service) series
        for metric in (
            "Requests",
            "Errors",
            "LatencyMs",
            "CostMicroUSD",
            "InputTokens",
            "OutputTokens",
            "CachedTokens",
            "ReasoningTokens",
            "CacheHits",
            "LedgerHits",
            "Fallbacks",
        ):
            assert re.search(rf'"{metric}", "agent", "{agent}"', text) or re.search(
                rf'"{metric}", "service", "stratus", "agent", "{agent}"', text
            ), (metric, agent)
    for stat in ("p50", "p90", "p99"):
        assert f'"stat": "{stat}"' in text
    for name in (
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "WorkflowsWaitingApproval",
        "4XXError",
        "5XXError",
        "Latency",
        "BudgetBurnPct",
        "global_day",
        "agent_day",
    ):
        assert f'"{name}"' in text, name


def test_every_alarm_notifies_the_operator_topic_on_alarm_and_ok(
    stage_template: dict[str, Any],
) -> None:
    topic = {"Ref": _operator_topic(stage_template)}
    alarms = _resources(stage_template, "AWS::CloudWatch::Alarm")
    assert len(alarms) > 20
    for logical_id, alarm in alarms.items():
        props = alarm["Properties"]
        assert props.get("AlarmActions"), f"{logical_id} has no alarm action"
        assert topic in props["AlarmActions"], logical_id
        assert topic in props.get("OKActions", []), logical_id


def test_the_operator_topic_is_encrypted_and_tls_only(stage_template: dict[str, Any]) -> None:
    topic_id = _operator_topic(stage_template)
    topic = stage_template["Resources"][topic_id]["Properties"]
    assert "Fn::GetAtt" in topic["KmsMasterKeyId"]
    policies = _resources(stage_template, "AWS::SNS::TopicPolicy").values()
    statements = [
        s
        for p in policies
        if {"Ref": topic_id} in p["Properties"]["Topics"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )


def _alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    props = alarm["Properties"]
    if "MetricName" in props:
        return [{"MetricName": props["MetricName"], "Dimensions": props.get("Dimensions", [])}]
    return [
        {
            "MetricName": q["MetricStat"]["Metric"]["MetricName"],
            "Dimensions": q["MetricStat"]["Metric"].get("Dimensions", []),
        }
        for q in props.get("Metrics", [])
        if "MetricStat" in q
    ]


def _dims(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric["Dimensions"]}


def test_per_agent_error_rate_latency_and_budget_alarms(stage_template: dict[str, Any]) -> None:
    alarms = list(_resources(stage_template, "AWS::CloudWatch::Alarm").values())
    for agent in AGENTS:
        error_rate = [
            a
            for a in alarms
            if {(m["MetricName"], _dims(m).get("agent")) for m in _alarm_metrics(a)}
            == {("Errors", agent), ("Requests", agent)}
        ]
        assert len(error_rate) == 1, agent
        (expression,) = [q for q in error_rate[0]["Properties"]["Metrics"] if "Expression" in q]
        assert "errors / requests" in expression["Expression"]

        latency = [
            a
            for a in alarms
            if a["Properties"].get("MetricName") == "LatencyMs"
            and _dims(_alarm_metrics(a)[0]) == {"agent": agent, "service": "stratus"}
        ]
        assert len(latency) == 1 and latency[0]["Properties"]["ExtendedStatistic"] == "p90"

        burn = [
            a
            for a in alarms
            if a["Properties"].get("MetricName") == "BudgetBurnPct"
            and _dims(_alarm_metrics(a)[0]).get("agent") == agent
        ]
        assert len(burn) == 1
        assert _dims(_alarm_metrics(burn[0])[0])["scope"] == "agent_day"
    (global_burn,) = [
        a
        for a in alarms
        if a["Properties"].get("MetricName") == "BudgetBurnPct"
        and _dims(_alarm_metrics(a)[0]) == {"scope": "global_day", "service": "stratus"}
    ]
    assert global_burn["Properties"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    (breaker,) = [a for a in alarms if a["Properties"].get("MetricName") == "BreakerOpens"]
    assert breaker["Properties"]["Threshold"] == 1
    assert breaker["Properties"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_token_and_cost_spikes_use_anomaly_detection(stage_template: dict[str, Any]) -> None:
    detectors = _resources(stage_template, "AWS::CloudWatch::AnomalyDetector").values()
    watched = {(d["Properties"]["MetricName"], _dims(d["Properties"])["agent"]) for d in detectors}
    alarms = _resources(stage_template, "AWS::CloudWatch::Alarm").values()
    bands = [a for a in alarms if a["Properties"].get("ThresholdMetricId")]
    for agent in AGENTS:
        for metric in ("OutputTokens", "CostMicroUSD"):
            assert (metric, agent) in watched
            (alarm,) = [
                a
                for a in bands
                if [(m["MetricName"], _dims(m)["agent"]) for m in _alarm_metrics(a)]
                == [(metric, agent)]
            ]
            props = alarm["Properties"]
            (band,) = [q for q in props["Metrics"] if q["Id"] == props["ThresholdMetricId"]]
            assert band["Expression"].startswith("ANOMALY_DETECTION_BAND(m1")
            assert props["ComparisonOperator"] == "GreaterThanUpperThreshold"


def test_every_dlq_alarms_on_its_first_message_and_every_workflow_on_failures(
    stage_template: dict[str, Any],
) -> None:
    queues = _resources(stage_template, "AWS::SQS::Queue")
    dlqs = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    }
    # An EventBridge target's DLQ (the lease sweeper's) is one too.
    dlqs |= {
        target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        for rule in _resources(stage_template, "AWS::Events::Rule").values()
        for target in rule["Properties"].get("Targets", [])
        if "DeadLetterConfig" in target
    }
    assert len(dlqs) == len(queue_plans(load_stage(stage_template["_stage"]), load_all())) + 1
    alarms = _resources(stage_template, "AWS::CloudWatch::Alarm").values()
    alarmed = {
        _dims(m)["QueueName"]["Fn::GetAtt"][0]
        for a in alarms
        for m in _alarm_metrics(a)
        if m["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and a["Properties"]["Threshold"] == 0
        and a["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
    }
    assert dlqs and dlqs <= alarmed, dlqs - alarmed

    machines = _resources(stage_template, "AWS::StepFunctions::StateMachine")
    failed = {
        _dims(m)["StateMachineArn"]["Ref"]
        for a in alarms
        for m in _alarm_metrics(a)
        if m["MetricName"] == "ExecutionsFailed"
    }
    assert machines and set(machines) == failed


def test_the_subscriptions_come_from_cdk_json(stage_template: dict[str, Any]) -> None:
    stage = stage_template["_stage"]
    wanted = cdk_json_context()["stratus:stages"][stage].get("operator_subscriptions", [])
    topic = {"Ref": _operator_topic(stage_template)}
    got = [
        {"protocol": s["Properties"]["Protocol"], "endpoint": s["Properties"]["Endpoint"]}
        for s in _resources(stage_template, "AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == topic
    ]
    assert got == wanted
    if stage == "prod":
        assert got  # prod names its operators


def test_a_stage_s_own_subscriptions_are_synthesized() -> None:
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from infra.stack import StratusStack

    stages = cdk_json_context()["stratus:stages"]
    subs = [
        {"protocol": "email", "endpoint": "oncall@example.org"},
        {"protocol": "https", "endpoint": "https://hooks.example.org/stratus"},
    ]
    stage = parse_stage("dev", {"dev": {**stages["dev"], "operator_subscriptions": subs}})
    app = App(context=synth_context())
    # Triage and the specialists it routes to, no more: a smaller stack.
    agents = {name: load_agent(name) for name in ("triage", "order_status", "returns")}
    stack = StratusStack(app, "Stratus-subs", stage=stage, agents=agents)
    template = dict(Template.from_stack(stack).to_json())
    got = [
        (s["Properties"]["Protocol"], s["Properties"]["Endpoint"])
        for s in _resources(template, "AWS::SNS::Subscription").values()
    ]
    assert got == [("email", "oncall@example.org"), ("https", "https://hooks.example.org/stratus")]
    names = {
        d["Properties"]["DashboardName"]
        for d in _resources(template, "AWS::CloudWatch::Dashboard").values()
    }
    assert names == {"Stratus-dev"}
    _, body = _dashboard(template)
    titles = json.dumps(body)
    assert "triage: requests and error rate" in titles and "support:" not in titles


@pytest.mark.parametrize(
    "bad",
    [
        {"protocol": "email", "endpoint": "not-an-address"},
        {"protocol": "https", "endpoint": "http://plain.example.org"},
        {"protocol": "carrier-pigeon", "endpoint": "x"},
        {"protocol": "email"},
    ],
)
def test_a_bad_subscription_fails_synthesis_with_the_field_name(bad: dict[str, Any]) -> None:
    stages = cdk_json_context()["stratus:stages"]
    with pytest.raises(StageConfigError, match="operator_subscriptions"):
        parse_stage("dev", {"dev": {**stages["dev"], "operator_subscriptions": [bad]}})


def test_the_hourly_cost_alarm_reads_the_series_every_execution_model_feeds(
    stage_template: dict[str, Any],
) -> None:
    """``stratus.task_metrics`` puts every task's ``CostMicroUSD`` on (agent, service):
    the series of the budget cost alarm (tests/unit/test_task_metrics.py emits it for an
    invoke, a session turn, a job and each workflow step)."""
    from stratus.observability import SERVICE

    alarms = _resources(stage_template, "AWS::CloudWatch::Alarm").values()
    for agent in AGENTS:
        (cost,) = [
            a
            for a in alarms
            if a["Properties"].get("MetricName") == "CostMicroUSD"
            and _dims(_alarm_metrics(a)[0]) == {"agent": agent, "service": SERVICE}
        ]
        assert cost["Properties"]["Statistic"] == "Sum"
        assert cost["Properties"]["Period"] == 3600

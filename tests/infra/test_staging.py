"""Staging's synthetic traffic in the template (the session's regional staging synthesis).

The schedule's rate and target, its DLQ and retries, the function's IAM (invoke the live
aliases, nothing else), the alarm with the operator action, cdk-nag clean; dev and prod
have no synthetic traffic.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import load_stage
from tests.infra.conftest import RegionalSynth

NAME = "Stratus-staging-eu-west-1"


@pytest.fixture(scope="module")
def template(regional_staging: RegionalSynth) -> dict[str, Any]:
    return regional_staging.templates[NAME]


def _of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


def _synthetic(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in _of_type(template, type_).items() if k.startswith("Synthetic")}


def _statements(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    found = []
    for policy in _of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def test_only_staging_has_synthetic_traffic() -> None:
    assert load_stage("staging").synthetic is not None
    assert load_stage("dev").synthetic is None and load_stage("prod").synthetic is None


def test_the_schedule_runs_the_function_every_15_minutes(template: dict[str, Any]) -> None:
    (schedule,) = _of_type(template, "AWS::Scheduler::Schedule").values()
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == "rate(15 minutes)"
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = props["Target"]
    (function_id,) = _synthetic(template, "AWS::Lambda::Function")
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
    (dlq_id,) = _synthetic(template, "AWS::SQS::Queue")
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
    # The scheduler's role may invoke that one function (and send to its DLQ).
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    invokes = [s for s in _statements(template, role_id) if s["Action"] == "lambda:InvokeFunction"]
    assert invokes and all(function_id in json.dumps(s["Resource"]) for s in invokes)


def test_the_function_may_invoke_only_the_live_aliases(template: dict[str, Any]) -> None:
    ((function_id, function),) = _synthetic(template, "AWS::Lambda::Function").items()
    props = function["Properties"]
    assert props["Handler"] == "functions.handlers.synthetic.lambda_handler"
    config = json.dumps(props["Environment"]["Variables"]["STRATUS_SYNTHETIC"])
    assert "order_status" in config and "smoke" in config
    role_id = props["Role"]["Fn::GetAtt"][0]
    statements = _statements(template, role_id)
    invoke = [s for s in statements if "lambda:InvokeFunction" in json.dumps(s["Action"])]
    (statement,) = invoke
    aliases = [a for a in _of_type(template, "AWS::Lambda::Alias") if a.startswith("Functions")]
    assert aliases and statement["Resource"] in [{"Ref": a} for a in aliases]
    allowed = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert allowed <= {
        "lambda:InvokeFunction",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "sqs:SendMessage",  # the on-failure destination, its DLQ only (below)
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }, allowed
    (dlq_id,) = _synthetic(template, "AWS::SQS::Queue")
    for s in statements:
        if "sqs:SendMessage" in json.dumps(s["Action"]):
            assert s["Resource"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    (config_id,) = _of_type(template, "AWS::Lambda::EventInvokeConfig")
    invoke_config = template["Resources"][config_id]["Properties"]
    assert invoke_config["MaximumRetryAttempts"] == 0
    assert invoke_config["FunctionName"] == {"Ref": function_id}


def test_failures_and_silence_alarm_the_operators(template: dict[str, Any]) -> None:
    alarms = _synthetic(template, "AWS::CloudWatch::Alarm")
    (failures,) = [
        a["Properties"]
        for a in alarms.values()
        if a["Properties"].get("MetricName") == "SyntheticFailures"
    ]
    assert failures["TreatMissingData"] == "breaching"
    assert failures["Threshold"] == 1
    assert failures["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert failures["Period"] == 1800 and failures["Namespace"] == "Stratus"
    assert failures["Dimensions"] == [{"Name": "scenario", "Value": "smoke"}]
    (topic_id,) = [k for k in _of_type(template, "AWS::SNS::Topic") if "Operator" in k]
    for alarm in alarms.values():  # the DLQ alarm too
        assert {"Ref": topic_id} in alarm["Properties"]["AlarmActions"]


def test_synthetic_resources_are_nag_clean(regional_staging: RegionalSynth) -> None:
    from aws_cdk.assertions import Annotations, Match

    annotations = Annotations.from_stack(regional_staging.stacks[NAME])
    for pack in ("AwsSolutions", "Serverless"):
        pattern = Match.string_like_regexp(f"{pack}-.*")
        found = [*annotations.find_error("*", pattern), *annotations.find_warning("*", pattern)]
        assert not found, "\n".join(f"{f.id} {str(f.entry.data)[:140]}" for f in found)

"""Bound producers in the synthesized template (issue 14): the ingest queue's policy admits
only the stage's producer principals (none configured: only the account root), and the
ingest function gets the sender -> tenants binding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import load_stage
from infra.producers import Producer, policy_principals, sender_bindings
from tests.infra.conftest import Synthesized, synth_context

ROLE = "arn:aws:iam::123456789012:role/orders-etl"
USER = "arn:aws:iam::123456789012:user/partner"


def _statements(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ingest queue policy's statements, by Sid."""
    found: dict[str, dict[str, Any]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::SQS::QueuePolicy":
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Sid") in ("OnlyBoundProducersSend", "BoundProducersSend"):
                found[statement["Sid"]] = {**statement, "_queues": resource["Properties"]["Queues"]}
    return found


def _ingest_env(template: dict[str, Any]) -> dict[str, Any]:
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            env = resource["Properties"].get("Environment", {}).get("Variables", {})
            if "STRATUS_INGEST_DLQ_URL" in env:
                return dict(env)
    raise AssertionError("no ingest function")


def _ingest_queue_id(template: dict[str, Any]) -> str:
    env = _ingest_env(template)
    ids = [
        logical_id
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::SQS::Queue" and logical_id.startswith("JobsIngestQueue")
    ]
    assert len(ids) == 1, ids
    assert env  # the function exists
    return ids[0]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_without_producer_principals_only_the_account_root_may_send(
    synthesized: Synthesized, stage: str
) -> None:
    template = synthesized.templates[stage]
    statements = _statements(template)
    deny, allow = statements["OnlyBoundProducersSend"], statements["BoundProducersSend"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"}
    assert deny["Action"] == "sqs:SendMessage"
    (principal,) = [deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]]
    rendered = json.dumps(principal)
    assert ":root" in rendered and "AWS::AccountId" in rendered
    assert allow["Effect"] == "Allow" and ":root" in json.dumps(allow["Principal"])
    # Only the ingest queue carries it.
    assert deny["_queues"] == [{"Ref": _ingest_queue_id(template)}]
    bindings = json.loads(_ingest_env(template)["STRATUS_PRODUCERS"])
    assert bindings == sender_bindings(load_stage(stage).producers)


def test_the_dev_stage_binds_only_the_local_clouds_access_keys() -> None:
    dev = load_stage("dev")
    assert policy_principals(dev.producers) == []  # access keys never reach AWS's policy
    assert set(sender_bindings(dev.producers)) == {"local", "demo", "x"}
    assert sender_bindings(load_stage("prod").producers) == {}


def test_configured_principals_are_the_only_ones_admitted(tmp_path: Any) -> None:
    from aws_cdk import App

    from infra.stack import StratusStack

    producers = (
        Producer(principal=ROLE, principal_id="AROAEXAMPLEROLEID0001", tenants=("t1", "t2")),
        Producer(principal=USER, principal_id="AIDAEXAMPLEUSERID0001", tenants=("t3",)),
        Producer(access_key="local", tenants=("*",)),
    )
    stage = load_stage("dev").model_copy(update={"name": "bound", "producers": producers})
    app = App(context=synth_context(), outdir=str(tmp_path))
    stack = StratusStack(app, "Stratus-bound", stage=stage)
    assembly = app.synth()
    path = tmp_path / assembly.get_stack_artifact(stack.artifact_id).template_file
    template = json.loads(path.read_text(encoding="utf-8"))
    statements = _statements(template)
    deny, allow = statements["OnlyBoundProducersSend"], statements["BoundProducersSend"]
    assert sorted(deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) == [ROLE, USER]
    assert sorted(allow["Principal"]["AWS"]) == [ROLE, USER]
    assert json.loads(_ingest_env(template)["STRATUS_PRODUCERS"]) == {
        "AIDAEXAMPLEUSERID0001": ["t3"],
        "AROAEXAMPLEROLEID0001": ["t1", "t2"],
        "local": ["*"],
    }


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"principal": ROLE, "tenants": ["t1"]}, "principal_id"),
        ({"principal": "arn:aws:s3:::bucket", "tenants": ["t1"]}, "not an IAM"),
        ({"access_key": "k", "principal": ROLE, "tenants": ["t1"]}, "either"),
        ({"access_key": "k", "tenants": []}, "tenants"),
        ({"tenants": ["t1"]}, "either"),
    ],
)
def test_a_wrong_producer_entry_fails_with_its_reason(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Producer.model_validate(entry)


def test_the_account_root_is_identified_by_its_account_number() -> None:
    root = Producer(principal="arn:aws:iam::123456789012:root", tenants=("*",))
    assert root.sender_id == "123456789012"

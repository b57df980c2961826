"""``stratus rollback --stage``: the ``live`` alias back to the previous version on AWS."""

from __future__ import annotations

import argparse
import io
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from infra import rollback_cli
from infra.eval_targets import UsageError


def _clients() -> dict[str, Any]:
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    )
    return {name: session.client(name) for name in ("lambda", "codedeploy", "cloudformation")}


class _Session:
    def __init__(self, clients: dict[str, Any]) -> None:
        self._clients = clients

    def client(self, name: str) -> Any:
        return self._clients[name]


def _args(**kw: Any) -> argparse.Namespace:
    base = {"agent": "triage", "stage": "prod", "stack": None, "function": None, "region": None}
    return argparse.Namespace(**{**base, **kw})


def _alias(version: str, weights: dict[str, float] | None = None) -> dict[str, Any]:
    alias: dict[str, Any] = {"Name": "live", "FunctionVersion": version, "AliasArn": "arn"}
    if weights is not None:
        alias["RoutingConfig"] = {"AdditionalVersionWeights": weights}
    return alias


def test_a_shift_in_progress_is_stopped_and_the_share_removed() -> None:
    clients = _clients()
    resources = {
        "StackResourceSummaries": [
            {
                "LogicalResourceId": "AgentTriageFunction0A1B2C3D",
                "PhysicalResourceId": "prod-triage-api",
                "ResourceType": "AWS::Lambda::Function",
                "ResourceStatus": "CREATE_COMPLETE",
                "LastUpdatedTimestamp": "2026-01-01T00:00:00Z",
            },
            {
                "LogicalResourceId": "AgentOrderStatusFunction0A1B2C3D",
                "PhysicalResourceId": "prod-order-status-api",
                "ResourceType": "AWS::Lambda::Function",
                "ResourceStatus": "CREATE_COMPLETE",
                "LastUpdatedTimestamp": "2026-01-01T00:00:00Z",
            },
        ]
    }
    with (
        Stubber(clients["cloudformation"]) as cfn,
        Stubber(clients["codedeploy"]) as cd,
        Stubber(clients["lambda"]) as lam,
    ):
        cfn.add_response("list_stack_resources", resources, {"StackName": "Stratus-prod"})
        cd.add_response(
            "list_deployments",
            {"deployments": ["d-1", "d-2"]},
            {"includeOnlyStatuses": rollback_cli.ACTIVE},
        )
        cd.add_response(
            "get_deployment",
            {"deploymentInfo": {"deploymentGroupName": "Stratus-prod-Triage-Release"}},
            {"deploymentId": "d-1"},
        )
        cd.add_response(
            "stop_deployment",
            {"status": "Pending"},
            {"deploymentId": "d-1", "autoRollbackEnabled": True},
        )
        cd.add_response(
            "get_deployment",
            {"deploymentInfo": {"deploymentGroupName": "Stratus-prod-Returns-Release"}},
            {"deploymentId": "d-2"},
        )
        lam.add_response(
            "get_alias",
            _alias("4", {"5": 0.1}),
            {"FunctionName": "prod-triage-api", "Name": "live"},
        )
        lam.add_response(
            "update_alias",
            _alias("4"),
            {
                "FunctionName": "prod-triage-api",
                "Name": "live",
                "FunctionVersion": "4",
                "RoutingConfig": {"AdditionalVersionWeights": {}},
            },
        )
        out = io.StringIO()
        assert rollback_cli.run(_args(), out, _Session(clients)) == 0
        cd.assert_no_pending_responses()
        lam.assert_no_pending_responses()
    text = out.getvalue()
    assert "stopped deployment d-1" in text and "d-2" not in text
    assert "prod-triage-api: live -> 4 (traffic to 5 removed)" in text


def test_after_a_release_the_alias_goes_to_the_highest_version_below() -> None:
    clients = _clients()
    with Stubber(clients["codedeploy"]) as cd, Stubber(clients["lambda"]) as lam:
        cd.add_response("list_deployments", {"deployments": []}, None)
        lam.add_response("get_alias", _alias("7"), None)
        versions = [{"Version": v} for v in ("$LATEST", "2", "5", "7", "8")]
        lam.add_response("list_versions_by_function", {"Versions": versions}, None)
        lam.add_response(
            "update_alias",
            _alias("5"),
            {
                "FunctionName": "fn",
                "Name": "live",
                "FunctionVersion": "5",
                "RoutingConfig": {"AdditionalVersionWeights": {}},
            },
        )
        out = io.StringIO()
        assert rollback_cli.run(_args(function=["fn"]), out, _Session(clients)) == 0
        lam.assert_no_pending_responses()
    assert "fn: live 7 -> 5" in out.getvalue()


def test_no_alias_is_a_usage_error() -> None:
    clients = _clients()
    with Stubber(clients["codedeploy"]) as cd, Stubber(clients["lambda"]) as lam:
        cd.add_response("list_deployments", {"deployments": []}, None)
        lam.add_client_error("get_alias", "ResourceNotFoundException", "Alias not found")
        with pytest.raises(UsageError, match="fn: no live alias"):
            rollback_cli.run(_args(function=["fn"]), io.StringIO(), _Session(clients))

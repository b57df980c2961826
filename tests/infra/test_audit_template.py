"""The audit table in the synthesized template: keys, per-stage TTL, PITR, who may touch it."""

from __future__ import annotations

import json
from typing import Any

from infra.config import load_stage
from tests.infra.conftest import Synthesized


def _audit_table(synthesized: Synthesized, stage: str) -> tuple[str, dict[str, Any]]:
    tables = synthesized.resources(stage, "AWS::DynamoDB::Table")
    (found,) = [(k, t) for k, t in tables.items() if k.startswith("TablesAudit")]
    return found


def test_the_audit_table_is_partitioned_by_tenant_with_ttl_and_pitr(
    synthesized: Synthesized,
) -> None:
    for stage in ("dev", "prod"):
        _, table = _audit_table(synthesized, stage)
        props = table["Properties"]
        assert props["KeySchema"] == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert load_stage("dev").audit_retention_days == 30
    assert load_stage("prod").audit_retention_days == 400


def test_recorders_only_write_the_trail_and_only_the_platform_reads_it(
    synthesized: Synthesized,
) -> None:
    logical_id, _ = _audit_table(synthesized, "prod")
    functions = synthesized.resources("prod", "AWS::Lambda::Function")
    policies = synthesized.resources("prod", "AWS::IAM::Policy")

    def actions_on_audit(prefix: str) -> set[str]:
        found: set[str] = set()
        for policy_id, policy in policies.items():
            if not policy_id.startswith(prefix):
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if logical_id in json.dumps(statement.get("Resource")):
                    action = statement["Action"]
                    found.update([action] if isinstance(action, str) else action)
        return found

    assert {"dynamodb:Query", "dynamodb:BatchWriteItem"} <= actions_on_audit("FunctionsPlatform")
    reads = {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:Scan", "dynamodb:BatchGetItem"}
    for prefix in (
        "FunctionsAgentOrderStatus",
        "FunctionsWorkerOrderStatus",
        "FunctionsAuthorizer",
    ):
        actions = actions_on_audit(prefix)
        assert "dynamodb:BatchWriteItem" in actions, prefix
        assert not reads & actions, prefix
    assert not actions_on_audit("FunctionsIngest") and not actions_on_audit("FunctionsCallbacks")
    recorders = {
        function_id: function["Properties"]["Environment"]["Variables"]
        for function_id, function in functions.items()
        if function_id.startswith(("FunctionsAgent", "FunctionsWorker", "FunctionsPlatform"))
    }
    for function_id, env in recorders.items():
        assert "STRATUS_AUDIT_TABLE" in env, function_id
        assert env["STRATUS_AUDIT_RETENTION_DAYS"] == "400", function_id

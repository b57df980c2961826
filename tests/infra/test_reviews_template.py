"""The reviews table in the synthesized template: keys, TTL, PITR, and who may touch it."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import Synthesized


def _reviews_table(synthesized: Synthesized, stage: str) -> tuple[str, dict[str, Any]]:
    tables = synthesized.resources(stage, "AWS::DynamoDB::Table")
    (found,) = [(k, t) for k, t in tables.items() if k.startswith("TablesReviews")]
    return found


def test_the_reviews_table_is_keyed_by_tenant_with_ttl_and_pitr(
    synthesized: Synthesized,
) -> None:
    for stage in ("dev", "prod"):
        _, table = _reviews_table(synthesized, stage)
        props = table["Properties"]
        assert props["KeySchema"] == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        assert props["TimeToLiveSpecification"] == {
            "AttributeName": "expires_at",
            "Enabled": True,
        }
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["BillingMode"] == "PAY_PER_REQUEST"


def test_the_platform_reads_and_writes_reviews_and_the_shares_reach_the_functions(
    synthesized: Synthesized,
) -> None:
    logical_id, _ = _reviews_table(synthesized, "dev")
    functions = synthesized.resources("dev", "AWS::Lambda::Function")
    policies = synthesized.resources("dev", "AWS::IAM::Policy")

    def actions_on_reviews(prefix: str) -> set[str]:
        found: set[str] = set()
        for policy_id, policy in policies.items():
            if not policy_id.startswith(prefix):
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if logical_id in json.dumps(statement.get("Resource")):
                    action = statement["Action"]
                    found.update([action] if isinstance(action, str) else action)
        return found

    platform = actions_on_reviews("FunctionsPlatform")
    assert {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem"} <= platform
    # Functions that answer may queue a review (write) but never read one back.
    for answering_prefix in ("FunctionsWorkerTriage", "FunctionsAgentTriage"):
        actions = actions_on_reviews(answering_prefix)
        assert "dynamodb:PutItem" in actions, answering_prefix
        assert not {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:Scan"} & actions
    answering = {
        function_id: function["Properties"]["Environment"]["Variables"]
        for function_id, function in functions.items()
        if function_id.startswith(("FunctionsAgent", "FunctionsWorker"))
    }
    assert len(answering) >= 10  # an API and a worker function per agent
    for function_id, env in answering.items():
        assert env["STRATUS_REVIEW_SAMPLE_RATE"] == "1.0", function_id  # dev: every answer
        assert "STRATUS_REVIEWS_TABLE" in env, function_id

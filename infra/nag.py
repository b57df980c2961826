"""Every cdk-nag suppression of the stack, in one place, each with its reason.

A suppression is attached to the one resource it concerns (and, for wildcard
findings, to the exact ``applies_to`` entry), never to a whole rule stack-wide.
Findings that could be fixed were fixed instead (own function roles without the
managed basic-execution policy, JSON access logs, throttling, tracing, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

if TYPE_CHECKING:
    from infra.stack import StratusStack

XRAY_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level "
        "permissions; '*' is the only valid resource (added by tracing=ACTIVE)."
    ),
    applies_to=["Resource::*"],
)
SYNC_NO_DLQ = NagPackSuppression(
    id="Serverless-LambdaDLQ",
    reason=(
        "Invoked synchronously by API Gateway only: the error goes back to the caller, "
        "Lambda never retries, so a dead-letter queue would never receive anything."
    ),
)


def _add(construct: IConstruct, *suppressions: NagPackSuppression) -> None:
    """Suppress on the construct's own CloudFormation resource only, not its children."""
    target = construct.node.default_child or construct
    NagSuppressions.add_resource_suppressions(target, list(suppressions), apply_to_children=False)


def apply_suppressions(stack: StratusStack) -> None:
    """Attach every suppression to the construct it is about."""
    for fn in stack.functions.by_key.values():
        # Grants land in the role's default policy, and with them the X-Ray statement.
        _add(fn.role.node.find_child("DefaultPolicy"), XRAY_WILDCARD)
        _add(fn.function, SYNC_NO_DLQ)

    _add(
        stack.model_secret.secret,
        NagPackSuppression(
            id="AwsSolutions-SMG4",
            reason=(
                "Holds third-party (OpenAI) API keys that only the provider can issue; "
                "there is no rotation Lambda to write. Keys rotate by adding the new key "
                "to api_keys with put-secret-value, then removing the old one."
            ),
        ),
    )

    api = stack.api
    cloudwatch_role = api.api.node.try_find_child("CloudWatchRole")
    if cloudwatch_role is not None:  # only when the stage creates the account-level role
        _add(
            cloudwatch_role,
            NagPackSuppression(
                id="AwsSolutions-IAM4",
                reason=(
                    "API Gateway's account-level logging role must carry the AWS-managed "
                    "AmazonAPIGatewayPushToCloudWatchLogs policy, the documented setup; "
                    "it is assumed by apigateway.amazonaws.com only."
                ),
                applies_to=[
                    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AmazonAPIGatewayPushToCloudWatchLogs"
                ],
            ),
        )
    _add(
        api.api.deployment_stage,
        NagPackSuppression(
            id="AwsSolutions-APIG3",
            reason=(
                "AWS WAF is optional and priced per web ACL; every route except health "
                "and OpenAPI requires an API key and the stage is throttled. Associate "
                "a web ACL with the stage where the threat model needs one."
            ),
        ),
    )
    for method in api.authorized_methods:
        _add(
            method,
            NagPackSuppression(
                id="AwsSolutions-COG4",
                reason=(
                    "Authorized by the Lambda REQUEST authorizer (tenant API keys from the "
                    "tenants table); callers are other systems, not Cognito users."
                ),
            ),
        )
    for method in api.public_methods:
        _add(
            method,
            NagPackSuppression(
                id="AwsSolutions-APIG4",
                reason=(
                    "Intentionally public: health check and OpenAPI document for load "
                    "balancers, uptime probes and client generators; no tenant data."
                ),
            ),
            NagPackSuppression(
                id="AwsSolutions-COG4",
                reason=(
                    "Intentionally public (health check, OpenAPI document): no "
                    "authorizer of any kind, so no Cognito user pool either."
                ),
            ),
        )

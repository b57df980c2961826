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


ALERTS_KEY_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "Publishing to the KMS-encrypted budget alerts topic needs kms:GenerateDataKey* "
        "(GenerateDataKey and its WithoutPlaintext variant, as CDK's grantPublish grants "
        "them), on that one key only."
    ),
    applies_to=["Action::kms:GenerateDataKey*"],
)


QUEUE_CONSUMER_NO_DLQ = NagPackSuppression(
    id="Serverless-LambdaDLQ",
    reason=(
        "Invoked synchronously only (SQS event source mapping, Step Functions Task): a "
        "function DLQ only serves asynchronous invokes. Failed messages go to the source "
        "queue's own DLQ through its redrive policy; failed tasks to the workflow's Catch."
    ),
)
JOBS_KEY_WILDCARD = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "Publishing to the KMS-encrypted job events topic needs kms:GenerateDataKey* "
        "(GenerateDataKey and its WithoutPlaintext variant, as CDK's grantPublish grants "
        "them), on that one key only."
    ),
    applies_to=["Action::kms:GenerateDataKey*"],
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
        if fn.plan.budget_alerts:
            _add(fn.role.node.find_child("DefaultPolicy"), ALERTS_KEY_WILDCARD)
        if fn.plan.publish_jobs_topic and not fn.plan.budget_alerts:
            _add(fn.role.node.find_child("DefaultPolicy"), JOBS_KEY_WILDCARD)
        sync_api = fn.plan.kind in ("agent", "platform", "authorizer")
        _add(fn.function, SYNC_NO_DLQ if sync_api else QUEUE_CONSUMER_NO_DLQ)
    _job_suppressions(stack)

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


def _job_suppressions(stack: StratusStack) -> None:
    """Queues, DLQs, event sources, the callback key and the workflows (``StratusJobs``)."""
    jobs = stack.jobs
    for dlq in jobs.dlqs.values():
        _add(
            dlq,
            NagPackSuppression(
                id="Serverless-SQSRedrivePolicy",
                reason=(
                    "This queue is itself a dead-letter queue (14 days' retention, alarmed "
                    "on its first message); a DLQ of a DLQ would only hide failures."
                ),
            ),
        )
    functions = stack.functions.by_key
    for plan in jobs.queue_plans:
        consumer = functions[plan.consumer].function
        for mapping in consumer.node.children:
            if not mapping.node.id.startswith("SqsEventSource:"):
                continue
            _add(
                mapping,
                NagPackSuppression(
                    id="Serverless-LambdaEventSourceMappingDestination",
                    reason=(
                        "On-failure destinations exist for stream and Kafka sources only; "
                        "for SQS, failed records return to the queue and its redrive policy "
                        "moves them to the queue's DLQ after maxReceiveCount."
                    ),
                ),
            )
    _add(
        jobs.callback_secret,
        NagPackSuppression(
            id="AwsSolutions-SMG4",
            reason=(
                "An HMAC key shared with every callback receiver: automatic rotation would "
                "break their signature checks without notice. Rotate by agreement with the "
                "receivers (put-secret-value; receivers accept old and new during rollover)."
            ),
        ),
    )
    platform_policy = stack.functions.platform.role.node.find_child("DefaultPolicy")
    execution_arns = [
        "Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
        f"{plan.state_machine_name(stack.stage_config)}:*"
        for plan in jobs.workflow_plans
    ]
    if execution_arns:
        _add(
            platform_policy,
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "StopExecution/DescribeExecution act on executions, named after job ids "
                    "only known at run time; the wildcard covers the executions of the one "
                    "state machine, nothing else."
                ),
                applies_to=execution_arns,
            ),
        )
    for agent, machine in jobs.workflows.items():
        worker = functions[f"worker:{agent}"].function
        logical = stack.get_logical_id(worker.node.default_child)  # type: ignore[arg-type]
        _add(
            machine.role.node.find_child("DefaultPolicy"),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "X-Ray tracing and CloudWatch Logs delivery of the state machine "
                    "(xray:Put*, logs:*LogDelivery*, ...) support no resource-level "
                    "permissions; '*' is their only valid resource."
                ),
                applies_to=["Resource::*"],
            ),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "Invoking the agent's job worker, including its versions and aliases "
                    "(<arn>:*), as CDK's grantInvoke grants; no other function."
                ),
                applies_to=[f"Resource::<{logical}.Arn>:*"],
            ),
        )

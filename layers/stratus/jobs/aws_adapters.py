"""AWS adapters of the job ports: SQS, Step Functions, SNS, Secrets Manager.

Each takes its client from the process's :class:`~stratus.aws.AwsClients` on
first use, so building an adapter costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from stratus.aws import AwsClients


def _string_attributes(attributes: Mapping[str, str]) -> dict[str, Any]:
    return {
        name: {"DataType": "String", "StringValue": value}
        for name, value in attributes.items()
        if value
    }


class SqsQueue:
    """:class:`~stratus.jobs.ports.MessageQueue` on SQS (string message attributes)."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    def send(self, queue_url: str, body: str, attributes: Mapping[str, str]) -> None:
        self._clients.client("sqs").send_message(
            QueueUrl=queue_url, MessageBody=body, MessageAttributes=_string_attributes(attributes)
        )

    def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        self._clients.client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=int(timeout_s)
        )


class StepFunctionsEngine:
    """:class:`~stratus.jobs.ports.WorkflowEngine` on Step Functions."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def _sfn(self) -> Any:
        return self._clients.client("stepfunctions")

    def start(self, state_machine_arn: str, name: str, execution_input: str) -> str:
        try:
            arn: str = self._sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=execution_input
            )["executionArn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
            arn = state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name
        return arn

    def stop(self, execution_arn: str, *, error: str, cause: str) -> None:
        self._sfn.stop_execution(executionArn=execution_arn, error=error, cause=cause)

    def send_task_success(self, task_token: str, output: str) -> None:
        self._sfn.send_task_success(taskToken=task_token, output=output)

    def send_task_failure(self, task_token: str, *, error: str, cause: str) -> None:
        self._sfn.send_task_failure(taskToken=task_token, error=error, cause=cause)


class SnsPublisher:
    """:class:`~stratus.jobs.ports.EventPublisher` on one SNS topic."""

    def __init__(self, clients: AwsClients, topic_arn: str) -> None:
        self._clients = clients
        self.topic_arn = topic_arn

    def publish(self, message: str, attributes: Mapping[str, str]) -> None:
        self._clients.client("sns").publish(
            TopicArn=self.topic_arn,
            Message=message,
            MessageAttributes=_string_attributes(attributes),
        )


class SecretsManagerSource:
    """:class:`~stratus.jobs.ports.SecretSource` on Secrets Manager."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    def secret_string(self, secret_id: str) -> str:
        response = self._clients.client("secretsmanager").get_secret_value(SecretId=secret_id)
        return str(response["SecretString"])

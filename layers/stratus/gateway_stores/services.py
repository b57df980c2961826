"""Adapters on AWS services other than DynamoDB: SNS budget alerts, Secrets Manager keys."""

from __future__ import annotations

import json
import threading
from typing import Any

from stratus.aws import AwsClients


class SnsAlertPublisher:
    """Publishes to the stage's alerts topic, whose ARN is derived once from the caller's
    account (STS) and the clients' region."""

    def __init__(self, clients: AwsClients, topic_name: str) -> None:
        self._clients = clients
        self._topic_name = topic_name
        self._topic_arn: str | None = None
        self._lock = threading.Lock()

    @property
    def topic_arn(self) -> str:
        with self._lock:
            if self._topic_arn is None:
                identity = self._clients.client("sts").get_caller_identity()
                partition = identity["Arn"].split(":")[1]
                self._topic_arn = (
                    f"arn:{partition}:sns:{self._clients.region}:{identity['Account']}:"
                    f"{self._topic_name}"
                )
            return self._topic_arn

    def publish(self, subject: str, message: dict[str, Any]) -> None:
        self._clients.client("sns").publish(
            TopicArn=self.topic_arn, Subject=subject[:100], Message=json.dumps(message)
        )


class SecretsManagerSource:
    """Secret strings through Powertools parameters (cached ``max_age_s`` per name)."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients
        self._provider: Any = None
        self._lock = threading.Lock()

    def get(self, name: str, *, max_age_s: int) -> str:
        with self._lock:
            if self._provider is None:
                from aws_lambda_powertools.utilities.parameters import SecretsProvider

                self._provider = SecretsProvider(
                    boto3_client=self._clients.client("secretsmanager")
                )
            provider = self._provider
        raw = provider.get(name, max_age=max_age_s)
        return raw if isinstance(raw, str) else str(raw)

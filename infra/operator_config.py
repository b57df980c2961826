"""The operator topic's subscriptions of a stage (``cdk.json`` stage key
``operator_subscriptions``), validated with the rest of :class:`infra.config.StageConfig`.

``[{"protocol": "email", "endpoint": "ops@example.com"}]``: every operator alarm of the
stage (``infra/constructs/operator_alarms.py``) notifies the stage's operator SNS topic,
and each entry here subscribes one endpoint to it (an email address confirms its
subscription from the mail AWS sends). No CDK import here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The SNS protocols an operator endpoint may use.
Protocol = Literal["email", "email-json", "https", "sms", "sqs", "lambda"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class OperatorSubscription(BaseModel):
    """One endpoint subscribed to the stage's operator topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol
    endpoint: str = Field(min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _endpoint_fits(self) -> OperatorSubscription:
        if self.protocol.startswith("email") and not _EMAIL.match(self.endpoint):
            raise ValueError(f"{self.endpoint!r} is not an email address")
        if self.protocol == "https" and not self.endpoint.startswith("https://"):
            raise ValueError("an https endpoint starts with https://")
        if self.protocol in ("sqs", "lambda") and not self.endpoint.startswith("arn:"):
            raise ValueError(f"a {self.protocol} endpoint is an ARN")
        return self

"""The Secrets Manager secret that holds the OpenAI API key(s).

The secret is JSON, ``{"api_keys": ["sk-..."]}``; several keys let a key be
rotated without downtime (add the new one, deploy nothing, remove the old one).
CloudFormation cannot know a real key, so the stack creates the secret with a
generated placeholder (``{"api_keys": [], "placeholder": "<random>"}``) that no
function can use, and after the first deploy an operator stores the real value::

    aws secretsmanager put-secret-value --secret-id <ModelSecretArn> \\
        --secret-string '{"api_keys": ["sk-..."]}'

Later deployments never overwrite it: the generated value is only set on create.
"""

from __future__ import annotations

import json

from aws_cdk import RemovalPolicy
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.nag_rules import suppress

STORE_KEYS_HOWTO = (
    "After deploying, store the OpenAI key(s): aws secretsmanager put-secret-value "
    '--secret-id <this ARN> --secret-string \'{"api_keys": ["sk-..."]}\''
)


class ModelSecret(Construct):
    """The model keys secret; ``secret`` is granted read to every agent function."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description=f"Stratus {stage.name}: OpenAI API keys as JSON. {STORE_KEYS_HOWTO}",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"api_keys": []}),
                generate_string_key="placeholder",
                exclude_punctuation=True,
                password_length=32,
            ),
            removal_policy=RemovalPolicy.RETAIN if stage.retain else RemovalPolicy.DESTROY,
        )
        suppress(
            self.secret,
            NagPackSuppression(
                id="AwsSolutions-SMG4",
                reason=(
                    "Holds third-party (OpenAI) API keys that only the provider can issue; "
                    "there is no rotation Lambda to write. Keys rotate by adding the new key "
                    "to api_keys with put-secret-value, then removing the old one."
                ),
            ),
        )

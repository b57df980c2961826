"""The ``functions/`` package as one Lambda code asset, shared by every function.

The asset holds ``functions/`` itself (not its contents), so the handler path
``functions.handlers.api.lambda_handler`` resolves the same in Lambda as in the
repository. Dependencies come from the runtime layer; this asset is source only.
"""

from __future__ import annotations

from aws_cdk import AssetHashType, BundlingOptions, DockerImage
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constructs.bundling import IGNORED_GLOBS, CopyBundler
from infra.constructs.runtime_layer import BUILD_IMAGE
from infra.paths import FUNCTIONS_DIR


class FunctionCode(Construct):
    """``code`` is the asset every Stratus function runs (one upload per change)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.code: lambda_.Code = lambda_.Code.from_asset(
            str(FUNCTIONS_DIR),
            asset_hash_type=AssetHashType.SOURCE,
            exclude=list(IGNORED_GLOBS),
            bundling=BundlingOptions(
                image=DockerImage.from_registry(BUILD_IMAGE),
                local=CopyBundler(FUNCTIONS_DIR),
            ),
        )

"""The ``stratus`` runtime layer: pinned dependencies plus the runtime library.

One layer for every function keeps the function packages tiny (fast deploys,
fast cold starts) and guarantees all functions run the same library versions.
It is bundled locally, without Docker, for arm64 and CPython 3.14; the Docker
image below is only named because CDK requires one, and is never pulled.
"""

from __future__ import annotations

from aws_cdk import AssetHashType, BundlingOptions, DockerImage
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constructs.bundling import IGNORED_GLOBS, LayerBundler
from infra.paths import LAYER_REQUIREMENTS, LAYERS_DIR, RUNTIME_PACKAGE_DIR

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
#: Never pulled: local bundling always succeeds or fails with a clear error.
BUILD_IMAGE = "public.ecr.aws/sam/build-python3.14"


class RuntimeLayer(Construct):
    """``layer`` is the LayerVersion every Stratus function attaches."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        code = lambda_.Code.from_asset(
            str(LAYERS_DIR),
            # The hash covers requirements.txt and the stratus sources: a change
            # to either (and nothing else) publishes a new layer version.
            asset_hash_type=AssetHashType.SOURCE,
            exclude=list(IGNORED_GLOBS),
            bundling=BundlingOptions(
                image=DockerImage.from_registry(BUILD_IMAGE),
                local=LayerBundler(LAYER_REQUIREMENTS, RUNTIME_PACKAGE_DIR),
            ),
        )
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=code,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="Stratus runtime library and its pinned dependencies (arm64, 3.14)",
        )

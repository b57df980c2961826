"""Long-term memory (issue 18): the stage's S3 Vectors bucket and index, and their grants.

``AWS::S3Vectors::VectorBucket`` ``stratus-<stage>-memory``, encrypted with SSE-S3 by
default or SSE-KMS under the stage's ``memory.kms_key_arn``, and ``AWS::S3Vectors::Index``
``memories``: float32, the stage's ``memory.dimension`` and ``memory.distance``, ``text``
non-filterable (:mod:`infra.topology.memory` holds the data, so the local cloud builds the
same). Both keep the stage's removal policy (``retain`` keeps every memory).

:meth:`StratusMemory.grant` gives each function whose plan uses memory (its environment
names the bucket) exactly the index actions of its kind, on the index ARN only; nobody
gets a bucket-level or wildcard action. No idle cost: S3 Vectors bills storage, requests
and queries, nothing per hour.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import CfnOutput, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3vectors as s3vectors
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.agent_function import StratusFunction
from infra.topology.memory import (
    DATA_TYPE,
    MEMORY_INDEX,
    NON_FILTERABLE_KEYS,
    memory_actions,
    memory_bucket_name,
    memory_encryption,
    plan_uses_memory,
)

#: What a function needs of a customer managed key to read and write vectors under it.
KMS_ACTIONS: tuple[str, ...] = ("kms:Decrypt", "kms:GenerateDataKey")


class StratusMemory(Construct):
    """``bucket`` and ``index`` of one stage; :meth:`grant` the functions that use them."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.bucket_name = memory_bucket_name(stage)
        config = memory_encryption(stage)
        self.bucket = s3vectors.CfnVectorBucket(
            self,
            "Bucket",
            vector_bucket_name=self.bucket_name,
            encryption_configuration=s3vectors.CfnVectorBucket.EncryptionConfigurationProperty(
                sse_type=config["sseType"], kms_key_arn=config.get("kmsKeyArn")
            ),
        )
        self.index = s3vectors.CfnIndex(
            self,
            "Index",
            vector_bucket_name=self.bucket_name,
            index_name=MEMORY_INDEX,
            data_type=DATA_TYPE,
            dimension=stage.memory.dimension,
            distance_metric=stage.memory.distance,
            metadata_configuration=s3vectors.CfnIndex.MetadataConfigurationProperty(
                non_filterable_metadata_keys=list(NON_FILTERABLE_KEYS)
            ),
        )
        self.index.node.add_dependency(self.bucket)
        policy = RemovalPolicy.RETAIN if stage.retain else RemovalPolicy.DESTROY
        self.bucket.apply_removal_policy(policy)
        self.index.apply_removal_policy(policy)
        self.index_arn = self.index.attr_index_arn
        self.granted: list[str] = []

        CfnOutput(
            scope,
            "MemoryBucketName",
            value=self.bucket_name,
            description="STRATUS_MEMORY_BUCKET: long-term memory (S3 Vectors bucket)",
        )
        CfnOutput(
            scope,
            "MemoryIndexArn",
            value=self.index_arn,
            description="The memory index (tenant and end customer in every key and filter)",
        )

    def grant(self, functions: Iterable[StratusFunction]) -> None:
        """Grant each function that uses memory its kind's actions on the index."""
        key = self.stage.memory.kms_key_arn
        for fn in functions:
            if not plan_uses_memory(fn.plan.static_env):
                continue
            fn.role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=list(memory_actions(fn.plan.kind)), resources=[self.index_arn]
                )
            )
            if key:
                fn.role.add_to_principal_policy(
                    iam.PolicyStatement(actions=list(KMS_ACTIONS), resources=[key])
                )
            self.granted.append(fn.plan.key)

"""Long-term memory (issue 18) as plain data: the stage's vector index, who uses it, and how.

One S3 Vectors bucket per stage, ``stratus-<stage>-memory`` (vector bucket names are
unique per account and region, so the name is known before deployment and the same
locally), with one index, ``memories``, of the stage's dimension and distance, float32,
and ``text`` non-filterable. Only functions that use memory get its environment and a
grant on the index (the construct, :mod:`infra.constructs.memory`, grants every plan whose
environment names the bucket, with :func:`memory_actions` of its kind):

* the API and worker functions of agents whose spec sets ``memory`` (remember and recall:
  ``PutVectors``, ``QueryVectors``, and ``GetVectors``, which a query with a metadata
  filter or ``returnMetadata`` also needs);
* the platform function when any agent uses memory, for ``/v1/memory`` (search, forget a
  customer, forget one memory: ``QueryVectors``, ``GetVectors``, ``ListVectors``,
  ``DeleteVectors``); it embeds a search's ``q`` through the model gateway, so it also
  gets the model secret, the gateway's tables and the budget alerts topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.config import StageConfig
from infra.topology.common import GATEWAY_TABLES, TableAccess, alerts_topic_name

MEMORY_INDEX = "memories"
#: Metadata the index stores but cannot filter on (the memory's text).
NON_FILTERABLE_KEYS: tuple[str, ...] = ("text",)
DATA_TYPE = "float32"

MEMORY_BUCKET_ENV = "STRATUS_MEMORY_BUCKET"
MEMORY_INDEX_ENV = "STRATUS_MEMORY_INDEX"
MEMORY_DIMENSION_ENV = "STRATUS_MEMORY_DIMENSION"
MEMORY_DISTANCE_ENV = "STRATUS_MEMORY_DISTANCE"
EMBEDDING_MODEL_ENV = "STRATUS_EMBEDDING_MODEL"
MEMORY_TTL_ENV = "STRATUS_MEMORY_TTL_S"
MEMORY_ENV_NAMES: tuple[str, ...] = (
    MEMORY_BUCKET_ENV,
    MEMORY_INDEX_ENV,
    MEMORY_DIMENSION_ENV,
    MEMORY_DISTANCE_ENV,
    EMBEDDING_MODEL_ENV,
    MEMORY_TTL_ENV,
)

#: Least privilege on the index, by function kind (nothing on the bucket itself).
AGENT_ACTIONS: tuple[str, ...] = (
    "s3vectors:GetVectors",
    "s3vectors:PutVectors",
    "s3vectors:QueryVectors",
)
PLATFORM_ACTIONS: tuple[str, ...] = (
    "s3vectors:DeleteVectors",
    "s3vectors:GetVectors",
    "s3vectors:ListVectors",
    "s3vectors:QueryVectors",
)


def memory_bucket_name(stage: StageConfig) -> str:
    return f"stratus-{stage.name}-memory"


def memory_encryption(stage: StageConfig) -> dict[str, str]:
    """The bucket's ``encryptionConfiguration``: SSE-S3, or SSE-KMS under the stage's key."""
    key = stage.memory.kms_key_arn
    return {"sseType": "aws:kms", "kmsKeyArn": key} if key else {"sseType": "AES256"}


def uses_memory(spec: Any) -> bool:
    """Whether an agent opted in (``AgentSpec.memory`` set)."""
    return getattr(spec, "memory", None) is not None


def memory_env(stage: StageConfig) -> dict[str, str]:
    """The variables of a function that uses memory (``stratus.config.Settings`` reads)."""
    memory = stage.memory
    return {
        MEMORY_BUCKET_ENV: memory_bucket_name(stage),
        MEMORY_INDEX_ENV: MEMORY_INDEX,
        MEMORY_DIMENSION_ENV: str(memory.dimension),
        MEMORY_DISTANCE_ENV: memory.distance,
        EMBEDDING_MODEL_ENV: memory.embedding_model,
        MEMORY_TTL_ENV: str(memory.ttl_days * 86_400),
    }


def agent_memory_env(spec: Any, stage: StageConfig) -> dict[str, str]:
    """An agent function's memory variables: none unless its spec uses memory."""
    return memory_env(stage) if uses_memory(spec) else {}


@dataclass(frozen=True)
class PlatformMemory:
    """What the platform function gets for ``/v1/memory`` (nothing without memory agents)."""

    env: Mapping[str, str] = field(default_factory=dict)
    tables: Mapping[str, TableAccess] = field(default_factory=dict)
    #: The model secret and the budget alerts topic (embedding ``q`` is a model call).
    model_calls: bool = False


def platform_memory(stage: StageConfig, specs: Mapping[str, Any] | None) -> PlatformMemory:
    if not specs or not any(uses_memory(spec) for spec in specs.values()):
        return PlatformMemory()
    env = memory_env(stage)
    env["STRATUS_ALERTS_TOPIC_NAME"] = alerts_topic_name(stage)
    return PlatformMemory(env=env, tables=dict(GATEWAY_TABLES), model_calls=True)


def plan_uses_memory(static_env: Mapping[str, str]) -> bool:
    return MEMORY_BUCKET_ENV in static_env


def memory_actions(kind: str) -> tuple[str, ...]:
    """The index actions a function of this kind is granted."""
    return PLATFORM_ACTIONS if kind == "platform" else AGENT_ACTIONS

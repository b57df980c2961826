"""Feature flags (issue 19) as plain data: the AppConfig names, who reads them, and how.

One AppConfig application per stage, ``stratus-<stage>``, with one environment named
after the stage and one freeform configuration profile, ``flags``, holding a Powertools
Feature Flags document (``stratus/data/flags.json`` is the first version,
``stratus/data/flags.schema.json`` its validator). The identifiers are names, not ids,
so they are known before deployment and are the same on the local cloud; the CDK
construct (:mod:`infra.constructs.flags`), the local cloud and ``stratus flags`` all take
them from here.

The functions that serve an agent's requests read the flags: each agent's API function
(which also answers its streamed requests; the stream router only hands frames to it),
its job worker, and the platform function (``POST /v1/jobs`` refuses a disabled agent
before the job is recorded). Their plans carry the ``STRATUS_FLAGS_*`` variables of
:func:`flags_env` (what ``stratus.config.Settings`` reads), so the template and the local
cloud give the same ones; the construct grants every plan that has them
``StartConfigurationSession`` and ``GetLatestConfiguration`` on exactly this
application, environment and profile.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.config import StageConfig

FLAGS_PROFILE = "flags"
#: The profile's content type: Powertools' AppConfigStore parses the document as JSON.
CONTENT_TYPE = "application/json"
#: A freeform hosted profile (``AWS.AppConfig.FeatureFlags`` is another format, which
#: Powertools does not read).
PROFILE_TYPE = "AWS.Freeform"
HOSTED_LOCATION = "hosted"

FLAGS_APPLICATION_ENV = "STRATUS_FLAGS_APPLICATION"
FLAGS_ENVIRONMENT_ENV = "STRATUS_FLAGS_ENVIRONMENT"
FLAGS_PROFILE_ENV = "STRATUS_FLAGS_PROFILE"
FLAGS_MAX_AGE_ENV = "STRATUS_FLAGS_MAX_AGE_S"
FLAGS_ENV_NAMES: tuple[str, ...] = (
    FLAGS_APPLICATION_ENV,
    FLAGS_ENVIRONMENT_ENV,
    FLAGS_PROFILE_ENV,
    FLAGS_MAX_AGE_ENV,
)
#: The AppConfigData actions a reader needs (both on the configuration's ARN).
READ_ACTIONS: tuple[str, ...] = (
    "appconfig:StartConfigurationSession",
    "appconfig:GetLatestConfiguration",
)

DATA_DIR = Path(__file__).resolve().parents[2] / "layers" / "stratus" / "data"
DEFAULT_DOCUMENT = DATA_DIR / "flags.json"
SCHEMA = DATA_DIR / "flags.schema.json"


def application_name(stage: StageConfig | str) -> str:
    name = stage if isinstance(stage, str) else stage.name
    return f"stratus-{name}"


def environment_name(stage: StageConfig | str) -> str:
    return stage if isinstance(stage, str) else stage.name


def flags_names(stage: StageConfig | str) -> dict[str, str]:
    """``{"application", "environment", "profile"}``: what ``.stratus/local.json`` keeps."""
    return {
        "application": application_name(stage),
        "environment": environment_name(stage),
        "profile": FLAGS_PROFILE,
    }


def flags_env(stage: StageConfig, max_age_s: int | None = None) -> dict[str, str]:
    """The variables of a function that reads the flags; ``max_age_s`` overrides the
    stage's cache time (the local cloud uses a short one)."""
    age = stage.flags.max_age_s if max_age_s is None else max_age_s
    return {
        FLAGS_APPLICATION_ENV: application_name(stage),
        FLAGS_ENVIRONMENT_ENV: environment_name(stage),
        FLAGS_PROFILE_ENV: FLAGS_PROFILE,
        FLAGS_MAX_AGE_ENV: str(age),
    }


def plan_reads_flags(static_env: Mapping[str, str]) -> bool:
    """Whether a function with this plan environment evaluates flags."""
    return FLAGS_APPLICATION_ENV in static_env


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileNotFoundError(f"{path} is missing (the flags runtime ships it)") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON object is expected")
    return data


def default_document() -> dict[str, Any]:
    """The first hosted configuration version: every feature with its safe default."""
    return _load(DEFAULT_DOCUMENT)


def schema() -> dict[str, Any]:
    """The JSON schema every version must pass (the profile's validator, the CLI)."""
    return _load(SCHEMA)


def schema_text() -> str:
    """The schema as the ``JSON_SCHEMA`` validator's content (compact JSON)."""
    return json.dumps(schema(), separators=(",", ":"), sort_keys=True)


def document_text(document: Mapping[str, Any]) -> str:
    """A document as a hosted configuration version's content (stable, readable)."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"

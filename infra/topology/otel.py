"""The OpenTelemetry export of a stage (``otlp`` in ``cdk.json``) as function environment.

Only agent functions (and their workers, which copy the agent's environment) call
models and tools, so only they get it. Unset: no variable, and :mod:`stratus.otel`
imports nothing.
"""

from __future__ import annotations

from infra.config import StageConfig

OTLP_ENDPOINT_ENV = "STRATUS_OTLP_ENDPOINT"
OTLP_HEADERS_SECRET_ENV = "STRATUS_OTLP_HEADERS_SECRET"  # noqa: S105 - a variable name


def otlp_env(stage: StageConfig) -> dict[str, str]:
    """``STRATUS_OTLP_ENDPOINT`` (and ``STRATUS_OTLP_HEADERS_SECRET``) when the stage exports."""
    if stage.otlp is None:
        return {}
    env = {OTLP_ENDPOINT_ENV: stage.otlp.endpoint}
    if stage.otlp.headers_secret:
        env[OTLP_HEADERS_SECRET_ENV] = stage.otlp.headers_secret
    return env

"""Typed runtime settings, read from the environment once per process.

The CDK stack sets these variables on every function, and the local cloud sets
the same ones, so a handler behaves identically in both places. Settings are
validated on first use (never at import time) and a bad value fails loudly with
the variable's name instead of surfacing later as an obscure runtime error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ModelTier = Literal["fast", "smart"]


class Settings(BaseSettings):
    """Everything a Stratus function needs to know about where it runs."""

    model_config = SettingsConfigDict(env_prefix="STRATUS_", extra="ignore", frozen=True)

    stage: str = "dev"
    #: The agent this function serves; empty for the platform function.
    agent: str = ""

    tenants_table: str = ""
    idempotency_table: str = ""
    orders_table: str = ""

    #: Secrets Manager id of the model keys secret (JSON: {"api_keys": [...]}).
    model_secret_name: str = ""
    #: A key given directly (local development only); wins over the secret.
    openai_api_key: str = Field(
        default="",
        validation_alias=AliasChoices("STRATUS_OPENAI_API_KEY", "OPENAI_API_KEY"),
        repr=False,
    )
    openai_base_url: HttpUrl | None = Field(
        default=None, validation_alias=AliasChoices("STRATUS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )

    tier_fast: str = "gpt-5-mini"
    tier_smart: str = "gpt-5"
    #: Optional path to a price table that replaces the bundled one.
    price_table: Path | None = None

    model_timeout_s: float = Field(default=20.0, gt=0, le=900)
    model_max_attempts: int = Field(default=3, ge=1, le=10)
    #: Exponential backoff with full jitter: uniform(0, min(cap, base * 2**n)).
    model_backoff_base_s: float = Field(default=0.5, ge=0)
    model_backoff_cap_s: float = Field(default=8.0, ge=0)
    #: Seconds kept back from the Lambda deadline to build and return a response.
    deadline_margin_s: float = Field(default=1.5, ge=0)
    secret_cache_s: int = Field(default=300, ge=0)

    max_body_bytes: int = Field(default=256 * 1024, gt=0, le=10 * 1024 * 1024)
    idempotency_ttl_s: int = Field(default=3600, gt=0)

    @field_validator("agent")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        return value.strip()

    def model_for(self, tier: ModelTier) -> str:
        return self.tier_fast if tier == "fast" else self.tier_smart


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()``."""
    return Settings()

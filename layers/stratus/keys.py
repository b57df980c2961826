"""Model provider API keys, kept out of code, logs and events.

Kept apart from ``stratus.llm`` so that a health check can verify the secret
without importing the ``openai`` SDK.
"""

from __future__ import annotations

import json

from stratus.config import Settings
from stratus.errors import ConfigurationError
from stratus.gateway_stores.ports import SecretSource


class KeyProvider:
    """API keys for the provider: a local override, or the Secrets Manager secret.

    The secret holds ``{"api_keys": ["sk-...", ...]}`` (a bare key string is
    accepted too). The source caches it for ``secret_cache_s`` seconds, so a
    rotated key is picked up without a redeploy.
    """

    def __init__(self, settings: Settings, source: SecretSource) -> None:
        self._settings = settings
        self._source = source

    def keys(self) -> list[str]:
        if self._settings.openai_api_key:
            return [self._settings.openai_api_key]
        name = self._settings.model_secret_name
        if not name:
            raise ConfigurationError("no model API key: set STRATUS_MODEL_SECRET_NAME")
        keys = _parse_secret(self._source.get(name, max_age_s=self._settings.secret_cache_s))
        if not keys:
            raise ConfigurationError("the model keys secret holds no API key")
        return keys


def _parse_secret(raw: str) -> list[str]:
    text = raw.strip()
    if not text.startswith("{"):
        return [text] if text else []
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError("the model keys secret is not valid JSON") from exc
    keys = value.get("api_keys") or ([value["api_key"]] if value.get("api_key") else [])
    return [k for k in keys if isinstance(k, str) and k.strip()]

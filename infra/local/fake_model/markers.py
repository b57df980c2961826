"""How the fake model says it is fake, and the ids and paths it serves."""

from __future__ import annotations

FINGERPRINT = "stratus-fake-model"
"""``system_fingerprint`` of every completion, so a caller can tell it is fake."""

FAKE_HEADER = "X-Stratus-Fake-Model"
"""Header set to ``true`` on every response."""

TEXT_PREFIX = "[fake model] "
"""Start of every default text reply (and of generated string values)."""

BANNER = (
    "Stratus FAKE model server: replies are generated offline by fixed rules "
    "and are NOT from a real model."
)

MODELS: tuple[str, ...] = (
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o-mini",
    "o4-mini",
)
"""Ids listed by ``GET /v1/models``; completions accept any model id."""

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"

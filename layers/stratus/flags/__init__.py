"""Feature flags per segment (issue 19): Powertools Feature Flags on AWS AppConfig.

:mod:`.context` builds the evaluation context of a request, :mod:`.store` reads flag
documents (AppConfig, the bundled default, a test's dict) and :mod:`.decisions` turns
them into what Stratus does: the kill switch, the model tier, the prompt version, the
tools and the input classifier of one request. ``docs/flags.md`` describes the features.
"""

from __future__ import annotations

from stratus.flags.context import FlagContext, tenant_hash
from stratus.flags.decisions import AgentFlags, admit, applied, bound, flag_context, resolve
from stratus.flags.store import AppConfigFlags, FlagSource, StaticFlags, default_document

__all__ = [
    "AgentFlags",
    "AppConfigFlags",
    "FlagContext",
    "FlagSource",
    "StaticFlags",
    "admit",
    "applied",
    "bound",
    "default_document",
    "flag_context",
    "resolve",
    "tenant_hash",
]

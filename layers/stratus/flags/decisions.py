"""What Stratus itself does with flags: one :class:`AgentFlags` per request.

The handler resolves the agent's flags once, before anything else of the request runs
(:func:`admit`: a disabled agent is refused with ``503 agent_disabled`` before any model
call or DynamoDB write), and binds them for the rest of the request (:func:`applied`);
the runner reads them (:func:`bound`) to pick the model tier, the prompt version, the
tools it offers and whether the input classifier runs. Binding keeps the services'
signatures as they are: the flags travel with the request like its correlation id.

Values a document gives that make no sense (an unknown tier, a tool list that is not a
list) are logged and ignored: a bad flag never breaks an agent, it just does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stratus.errors import AgentDisabled
from stratus.flags.context import DEFAULT_TIER, FlagContext
from stratus.observability import logger

if TYPE_CHECKING:
    from stratus.agents import AgentSpec, Principal
    from stratus.config import ModelTier, Settings
    from stratus.flags.store import FlagSource

#: The features Stratus evaluates, with the value that means "as the spec says".
NEUTRAL: dict[str, Any] = {
    "agent_disabled": False,
    "model_tier": "",
    "prompt_version": "",
    "tools_enabled": "*",
    "tools_disabled": [],
    "guardrail_classifier": "spec",
}
FlagTier = Literal["fast", "smart", "economy"]
TIERS: tuple[FlagTier, ...] = ("fast", "smart", "economy")


@dataclass(frozen=True)
class AgentFlags:
    """The flag decisions of one request to ``agent`` (the defaults: no change)."""

    agent: str = ""
    disabled: bool = False
    #: A tier replacing the spec's; None: the spec's.
    model_tier: FlagTier | None = None
    #: A prompt version replacing the spec's (the runner checks that the file exists).
    prompt_version: str | None = None
    #: Only these of the spec's tools are offered; None: all of them.
    tools_enabled: frozenset[str] | None = None
    #: These of the spec's tools are never offered (after ``tools_enabled``).
    tools_disabled: frozenset[str] = frozenset()
    #: True/False turns the model-classifier input screen on/off; None: the spec's.
    classifier: bool | None = None

    def offers(self, tool: str) -> bool:
        """Whether the flags leave ``tool`` (one of the spec's) on offer."""
        if self.tools_enabled is not None and tool not in self.tools_enabled:
            return False
        return tool not in self.tools_disabled

    @property
    def changes_tools(self) -> bool:
        return self.tools_enabled is not None or bool(self.tools_disabled)


def flag_context(
    settings: Settings,
    *,
    agent: str,
    tenant_id: str,
    principal: Principal | None = None,
    release: str = "",
) -> FlagContext:
    """The request's context; the tier is the principal's (the authorizer's, no read)."""
    return FlagContext(
        tenant_id=tenant_id,
        agent=agent,
        stage=settings.stage,
        tenant_tier=(principal.tier if principal is not None else "") or DEFAULT_TIER,
        release=release,
        customer_id=(principal.customer_id if principal is not None else "") or "",
    )


def resolve(source: FlagSource, context: FlagContext) -> AgentFlags:
    """Every feature for ``context``, checked (bad values ignored, with a log line)."""
    values = context.as_dict()
    got = {name: source.evaluate(name, values, neutral) for name, neutral in NEUTRAL.items()}
    return AgentFlags(
        agent=context.agent,
        disabled=got["agent_disabled"] is True,
        model_tier=_tier(got["model_tier"]),
        prompt_version=_text("prompt_version", got["prompt_version"]),
        tools_enabled=(
            None if got["tools_enabled"] == "*" else _names("tools_enabled", got["tools_enabled"])
        ),
        tools_disabled=_names("tools_disabled", got["tools_disabled"]) or frozenset(),
        classifier=got["guardrail_classifier"]
        if isinstance(got["guardrail_classifier"], bool)
        else None,
    )


def admit(source: FlagSource, context: FlagContext) -> AgentFlags:
    """:func:`resolve`, refusing a disabled agent (``503 agent_disabled``)."""
    flags = resolve(source, context)
    if flags.disabled:
        raise AgentDisabled(
            f"agent {context.agent!r} is disabled by a feature flag; try again later",
            details={"agent": context.agent},
            headers={"Retry-After": "30"},
        )
    return flags


def model_choice(flags: AgentFlags, tier: ModelTier, settings: Settings) -> tuple[str, ModelTier]:
    """The model and the gateway tier (its fallbacks, its downgrade) of a run: the spec's
    ``tier``, or the ``model_tier`` flag's (``economy`` falls back like ``fast``)."""
    if flags.model_tier is None:
        return settings.model_for(tier), tier
    if flags.model_tier == "economy":
        return settings.tier_economy, "fast"
    return settings.model_for(flags.model_tier), flags.model_tier


def prompt_version(spec: AgentSpec, version: str, cache: dict[str, str]) -> str:
    """The system prompt of ``spec``'s prompt ``version`` (kept in ``cache``); the spec's
    own when the agent has no such file (logged: the flag names a prompt that is not there)."""
    if version not in cache:
        from stratus.agents import PROMPT_VERSION

        path = spec.prompt_dir / f"{version}.md"
        if not (PROMPT_VERSION.match(version) and path.is_file()):
            logger.warning(
                "prompt_version flag names no prompt of the agent; the spec's is used",
                extra={"agent": spec.name, "prompt_version": version},
            )
            return spec.system_prompt
        cache[version] = path.read_text(encoding="utf-8").strip()
    return cache[version]


def served_prompt_version(spec: AgentSpec) -> str:
    """The prompt version this request's answer is written with: the bound flag's when
    it names a prompt of the agent (what :func:`prompt_version` serves), else the spec's."""
    version = bound(spec.name).prompt_version
    if version is None or version == spec.prompt_version:
        return spec.prompt_version
    return version if _has_prompt(spec.prompt_dir, version) else spec.prompt_version


@lru_cache(maxsize=64)
def _has_prompt(prompt_dir: Path, version: str) -> bool:
    from stratus.agents import PROMPT_VERSION

    return bool(PROMPT_VERSION.match(version)) and (prompt_dir / f"{version}.md").is_file()


_DEFAULTS = asdict(AgentFlags())


def _loggable(value: Any) -> Any:
    return sorted(value) if isinstance(value, frozenset) else value


_bound: ContextVar[AgentFlags | None] = ContextVar("stratus_agent_flags", default=None)


@contextmanager
def applied(flags: AgentFlags) -> Iterator[AgentFlags]:
    """Bind ``flags`` for the code run inside (the request, or one job of a batch); a
    request whose flags change something says what in one log line."""
    changed = {k: v for k, v in asdict(flags).items() if v != _DEFAULTS[k] and k != "agent"}
    if changed:
        logger.info(
            "feature flags apply",
            extra={"agent": flags.agent, **{f"flag_{k}": _loggable(v) for k, v in changed.items()}},
        )
    token = _bound.set(flags)
    try:
        yield flags
    finally:
        _bound.reset(token)


def bound(agent: str) -> AgentFlags:
    """The flags bound for ``agent`` in this request; the defaults for any other agent
    (a summarizer, a workflow role) or outside a request (scripts, evals)."""
    flags = _bound.get()
    if flags is None or flags.agent != agent:
        return AgentFlags(agent=agent)
    return flags


def _tier(value: Any) -> FlagTier | None:
    if value in ("", None):
        return None
    if value in TIERS:
        tier: FlagTier = value
        return tier
    logger.warning("model_tier flag names no tier; ignored", extra={"value": repr(value)})
    return None


def _text(name: str, value: Any) -> str | None:
    if value in ("", None):
        return None
    if isinstance(value, str):
        return value
    logger.warning("flag value is not a string; ignored", extra={"flag": name})
    return None


def _names(name: str, value: Any) -> frozenset[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    logger.warning("flag value is not a list of tool names; ignored", extra={"flag": name})
    return None

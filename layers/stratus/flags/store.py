"""Where flag documents come from: AWS AppConfig, the bundled default, or a test's dict.

Every source evaluates with Powertools Feature Flags (``FeatureFlags.evaluate``), so a
rule means the same thing in a unit test, on the local cloud and in AWS. The AppConfig
source is Powertools' ``AppConfigStore``: it calls AppConfigData (``StartConfiguration
Session`` once, then ``GetLatestConfiguration``) at most once per ``flags_max_age_s``
per process and serves every evaluation in between from memory.

A source never fails a request: a document that cannot be fetched or does not validate
is logged, and the evaluation returns the caller's default (the behaviour without flags).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.utilities.feature_flags import AppConfigStore, FeatureFlags
from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

from stratus.observability import logger

if TYPE_CHECKING:
    from stratus.aws import AwsClients
    from stratus.config import Settings


class FlagSource(Protocol):
    """What Stratus asks of a flag store."""

    def evaluate(self, name: str, context: dict[str, Any], default: Any) -> Any:
        """The value of feature ``name`` for ``context``; ``default`` when it has none."""
        ...

    def document(self) -> dict[str, Any]:
        """The whole document as currently cached (the CLI and tests show it)."""
        ...


#: The bundled default document and the JSON schema every flag document must match
#: (the CDK configuration profile's validator and ``stratus flags set`` use the schema).
DEFAULT_DOCUMENT = Path(__file__).resolve().parent.parent / "data" / "flags.json"
DOCUMENT_SCHEMA = DEFAULT_DOCUMENT.with_name("flags.schema.json")


@cache
def default_document() -> dict[str, Any]:
    """``stratus/data/flags.json``: every feature with the behaviour of Stratus without flags."""
    document: dict[str, Any] = json.loads(DEFAULT_DOCUMENT.read_text(encoding="utf-8"))
    return document


class _DocumentStore(StoreProvider):
    """A Powertools store over a dict held in memory (returns the same object, so
    Powertools validates it once)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    @property
    def get_raw_configuration(self) -> dict[str, Any]:
        return self._document

    def get_configuration(self) -> dict[str, Any]:
        return self._document


class _PowertoolsFlags:
    """Evaluation through ``FeatureFlags``, with failures turned into the default."""

    def __init__(self, store: StoreProvider) -> None:
        self._store = store
        self._flags = FeatureFlags(store=store)

    def evaluate(self, name: str, context: dict[str, Any], default: Any) -> Any:
        try:
            return self._flags.evaluate(name=name, context=context, default=default)
        except Exception as exc:  # a document that does not validate, an access error
            logger.warning(
                "feature flag evaluation failed; using the default",
                extra={"flag": name, "error": repr(exc)},
            )
            return default

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = self._flags.get_configuration()
        return document


class StaticFlags(_PowertoolsFlags):
    """A fixed document (tests, scripts, and functions without ``STRATUS_FLAGS_APPLICATION``)."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        super().__init__(_DocumentStore(default_document() if document is None else document))


class AppConfigFlags(_PowertoolsFlags):
    """The stage's AppConfig configuration profile, cached ``max_age`` seconds per process.

    ``client`` is the process's ``appconfigdata`` client (the local cloud points it at
    its AppConfigData front with ``AWS_ENDPOINT_URL_APPCONFIGDATA``).
    """

    def __init__(
        self, *, application: str, environment: str, profile: str, max_age: int, client: Any
    ) -> None:
        store = AppConfigStore(
            environment=environment,
            application=application,
            name=profile,
            max_age=max_age,
            boto3_client=client,
        )
        super().__init__(store)


def flag_source(settings: Settings, clients: AwsClients) -> FlagSource:
    """The source ``settings`` name: AppConfig, or the default document without an application."""
    if not settings.flags_application:
        return StaticFlags()
    return AppConfigFlags(
        application=settings.flags_application,
        environment=settings.flags_environment or settings.stage,
        profile=settings.flags_profile or "flags",
        max_age=settings.flags_max_age_s,
        client=clients.client("appconfigdata"),
    )

"""The AppConfig source really reads AppConfigData through boto3 (a botocore Stubber
checks every call and its parameters) and honours ``max_age``: a changed document is
seen only once the cache time has passed. Time is a fake clock: Powertools' parameter
cache reads ``datetime.now()`` of its module, which the test replaces."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import base as parameters_base
from botocore.response import StreamingBody
from botocore.stub import Stubber

from stratus.aws import AwsClients
from stratus.config import Settings
from stratus.flags import AppConfigFlags, FlagContext, StaticFlags, default_document, resolve
from stratus.flags.store import flag_source

CTX = FlagContext(tenant_id="tenant-a", agent="triage", stage="dev")


class Clock:
    now = datetime(2026, 12, 1, 12, 0, 0)

    @classmethod
    def advance(cls, seconds: float) -> None:
        cls.now += timedelta(seconds=seconds)


class FakeDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return Clock.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[Clock]:
    monkeypatch.setattr(parameters_base, "datetime", FakeDatetime)
    return Clock


def body(document: dict[str, Any]) -> StreamingBody:
    raw = json.dumps(document).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def empty() -> StreamingBody:
    return StreamingBody(io.BytesIO(b""), 0)


def disabled() -> dict[str, Any]:
    doc = json.loads(json.dumps(default_document()))
    doc["agent_disabled"]["default"] = True
    return doc


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "appconfigdata",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    calls: list[str] = []
    client.meta.events.register(
        "before-parameter-build.appconfigdata",
        lambda model, **_: calls.append(model.name),  # every call made, stubbed or not
    )
    client.calls = calls
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def latest(stubber: Stubber, token: str, next_token: str, document: dict[str, Any] | None) -> None:
    stubber.add_response(
        "get_latest_configuration",
        {
            "NextPollConfigurationToken": next_token,
            "NextPollIntervalInSeconds": 30,
            "ContentType": "application/json",
            # AppConfigData answers an empty body when nothing changed since the token.
            "Configuration": body(document) if document is not None else empty(),
        },
        {"ConfigurationToken": token},
    )


def test_the_store_calls_appconfigdata_and_honours_max_age(
    stubbed: tuple[Any, Stubber], clock: type[Clock]
) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "start_configuration_session",
        {"InitialConfigurationToken": "tok-0"},
        {
            "ApplicationIdentifier": "stratus-dev",
            "EnvironmentIdentifier": "dev",
            "ConfigurationProfileIdentifier": "flags",
        },
    )
    latest(stubber, "tok-0", "tok-1", default_document())
    flags = AppConfigFlags(
        application="stratus-dev", environment="dev", profile="flags", max_age=30, client=client
    )
    assert resolve(flags, CTX).disabled is False
    assert client.calls == ["StartConfigurationSession", "GetLatestConfiguration"]
    for _ in range(20):  # every evaluation within max_age: from memory, no call
        assert resolve(flags, CTX).disabled is False
    clock.advance(29)
    assert resolve(flags, CTX).disabled is False  # changed in AppConfig, not yet seen
    assert len(client.calls) == 2
    latest(stubber, "tok-1", "tok-2", disabled())
    clock.advance(2)  # past max_age: one GetLatestConfiguration, the new document
    assert resolve(flags, CTX).disabled is True
    assert client.calls[2:] == ["GetLatestConfiguration"]
    assert flags.document()["agent_disabled"]["default"] is True
    latest(stubber, "tok-2", "tok-3", None)  # unchanged: an empty body keeps the last one
    clock.advance(31)
    assert resolve(flags, CTX).disabled is True
    assert len(client.calls) == 4


def test_an_appconfig_failure_evaluates_to_the_defaults(
    stubbed: tuple[Any, Stubber], clock: type[Clock]
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("start_configuration_session", "ResourceNotFoundException")
    flags = AppConfigFlags(
        application="stratus-dev", environment="dev", profile="flags", max_age=30, client=client
    )
    assert resolve(flags, CTX).disabled is False  # no flags is not an outage


def test_settings_choose_the_source(aws_credentials: None) -> None:
    assert isinstance(flag_source(Settings(), AwsClients()), StaticFlags)
    settings = Settings(stage="dev", flags_application="stratus-dev", flags_max_age_s=7)
    source = flag_source(settings, AwsClients())
    assert isinstance(source, AppConfigFlags)
    store: Any = source._store  # the names and cache time the source was built with
    assert (store.application, store.environment, store.name, store.cache_seconds) == (
        "stratus-dev",
        "dev",
        "flags",
        7,
    )

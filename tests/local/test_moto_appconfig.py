"""The local AppConfigData API (issue 19) as boto3 and Powertools see it, on moto's server
with :mod:`infra.local.moto_appconfig` installed: sessions by name or id, the latest hosted
version, an empty body when nothing changed, single-use tokens, the documented errors,
and Powertools' ``AppConfigStore`` + ``FeatureFlags`` reading through it unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from infra.local import moto_appconfig

DOCUMENT: dict[str, Any] = {
    "agent_disabled": {
        "default": False,
        "rules": {
            "triage off": {
                "when_match": True,
                "conditions": [{"action": "EQUALS", "key": "agent", "value": "triage"}],
            }
        },
    }
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    moto_appconfig.install()  # before the server builds its AppConfig routes
    moto_appconfig.install()  # idempotent
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    moto_appconfig.uninstall()


def _session() -> Any:
    return boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture(scope="module")
def appconfig(endpoint: str) -> Any:
    return _session().client("appconfig", endpoint_url=endpoint)


@pytest.fixture(scope="module")
def data(endpoint: str) -> Any:
    return _session().client("appconfigdata", endpoint_url=endpoint)


@pytest.fixture(scope="module")
def profile(appconfig: Any) -> dict[str, str]:
    app = appconfig.create_application(Name="stratus-test")
    prof = appconfig.create_configuration_profile(
        ApplicationId=app["Id"], Name="flags", LocationUri="hosted", Type="AWS.Freeform"
    )
    _publish(appconfig, app["Id"], prof["Id"], DOCUMENT, "v1")
    return {"app": app["Id"], "profile": prof["Id"]}


def _publish(appconfig: Any, app: str, profile: str, document: Any, label: str) -> int:
    version = appconfig.create_hosted_configuration_version(
        ApplicationId=app,
        ConfigurationProfileId=profile,
        Content=json.dumps(document).encode(),
        ContentType="application/json",
        VersionLabel=label,
    )
    return int(version["VersionNumber"])


def _start(data: Any, app: str = "stratus-test", profile: str = "flags", **extra: Any) -> str:
    response = data.start_configuration_session(
        ApplicationIdentifier=app,
        EnvironmentIdentifier="test",
        ConfigurationProfileIdentifier=profile,
        **extra,
    )
    return str(response["InitialConfigurationToken"])


def test_latest_version_then_empty_until_a_new_one(
    data: Any, appconfig: Any, profile: dict[str, str]
) -> None:
    first = data.get_latest_configuration(ConfigurationToken=_start(data))
    assert json.loads(first["Configuration"].read()) == DOCUMENT
    assert first["ContentType"] == "application/json"
    assert first["VersionLabel"] == "v1"
    assert first["NextPollIntervalInSeconds"] == 60
    again = data.get_latest_configuration(ConfigurationToken=first["NextPollConfigurationToken"])
    assert again["Configuration"].read() == b""  # unchanged: an empty body, as AWS does
    assert "VersionLabel" not in again

    changed = {"agent_disabled": {"default": True}}
    _publish(appconfig, profile["app"], profile["profile"], changed, "v2")
    fresh = data.get_latest_configuration(ConfigurationToken=again["NextPollConfigurationToken"])
    assert json.loads(fresh["Configuration"].read()) == changed
    assert fresh["VersionLabel"] == "v2"
    _publish(appconfig, profile["app"], profile["profile"], DOCUMENT, "v3")  # as it was


def test_ids_work_as_well_as_names(data: Any, profile: dict[str, str]) -> None:
    token = _start(data, app=profile["app"], profile=profile["profile"])
    assert json.loads(
        data.get_latest_configuration(ConfigurationToken=token)["Configuration"].read()
    )


def test_a_token_is_good_for_one_call(data: Any, profile: dict[str, str]) -> None:
    token = _start(data)
    data.get_latest_configuration(ConfigurationToken=token)
    with pytest.raises(ClientError) as used:
        data.get_latest_configuration(ConfigurationToken=token)
    assert used.value.response["Error"]["Code"] == "BadRequestException"
    assert used.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as bogus:
        data.get_latest_configuration(ConfigurationToken="not-a-token")
    assert bogus.value.response["Error"]["Code"] == "BadRequestException"


def test_unknown_names_are_not_found(data: Any, profile: dict[str, str]) -> None:
    for app, prof in (("nope", "flags"), ("stratus-test", "nope")):
        with pytest.raises(ClientError) as error:
            _start(data, app=app, profile=prof)
        assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_required_poll_interval(data: Any, profile: dict[str, str]) -> None:
    token = _start(data, RequiredMinimumPollIntervalInSeconds=15)
    first = data.get_latest_configuration(ConfigurationToken=token)
    assert first["NextPollIntervalInSeconds"] == 15
    with pytest.raises(ClientError) as early:
        data.get_latest_configuration(ConfigurationToken=first["NextPollConfigurationToken"])
    assert early.value.response["Error"]["Code"] == "BadRequestException"
    # botocore refuses < 15 itself; the server does too, for clients that do not.
    with pytest.raises(moto_appconfig.DataError) as out_of_range:
        moto_appconfig.start_session(
            "123456789012",
            "us-east-1",
            {
                "ApplicationIdentifier": "stratus-test",
                "EnvironmentIdentifier": "test",
                "ConfigurationProfileIdentifier": "flags",
                "RequiredMinimumPollIntervalInSeconds": 5,
            },
        )
    assert out_of_range.value.code == "BadRequestException"


def test_powertools_reads_through_the_endpoint_variable(
    endpoint: str, profile: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store builds its own client: ``AWS_ENDPOINT_URL_APPCONFIGDATA`` is enough."""
    from aws_lambda_powertools.utilities.feature_flags import AppConfigStore, FeatureFlags

    for name, value in (
        ("AWS_ENDPOINT_URL_APPCONFIGDATA", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    store = AppConfigStore(environment="test", application="stratus-test", name="flags", max_age=1)
    flags = FeatureFlags(store=store)
    assert flags.evaluate(name="agent_disabled", context={"agent": "triage"}, default=False)
    assert not flags.evaluate(name="agent_disabled", context={"agent": "other"}, default=False)

"""Fixtures shared by the whole suite.

Functional tests run the real handlers in-process against moto (DynamoDB,
Secrets Manager) and the real ``openai`` client over loopback HTTP to the
offline fake model server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.fake_model import FakeModelServer


def pytest_configure(config: pytest.Config) -> None:
    # Powertools reads these when its objects are built, i.e. on first import.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "StratusTest")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "stratus")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


#: Tests that start a local cloud (every e2e module): one xdist worker runs them all, one
#: cloud at a time. Two clouds at once on two cores make the timing-sensitive ones (the
#: chaos soak, timeouts, leases) flaky, and each module assumes a machine of its own.
LOCAL_CLOUD_TESTS = ("tests/e2e/",)
LOCAL_CLOUD_GROUP = "local-cloud"


@pytest.hookimpl(optionalhook=True)  # without xdist (-p no:xdist) there is no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` that really groups.

    pytest-xdist 3.8 marks a test's group by rewriting ``item._nodeid``, which pytest 9
    no longer reads (a node id is ``item._id``): every ``xdist_group`` mark was silently
    ignored, and e2e modules ran on both workers at once. This scheduler keeps
    loadgroup's rule (one work unit per group, each other test on its own) and decides
    the group from the test's path, which the controller sees without collecting.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LocalCloudGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(LOCAL_CLOUD_TESTS):
                return LOCAL_CLOUD_GROUP
            if nodeid.rfind("@") > nodeid.rfind("]"):  # a group xdist did manage to name
                return nodeid.rsplit("@", 1)[-1]
            return nodeid

    return LocalCloudGroups(config, log)


@pytest.fixture(scope="session")
def fake_model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer(quiet=True) as server:
        yield server


@pytest.fixture
def fake_model(fake_model_server: FakeModelServer) -> Iterator[FakeModelServer]:
    fake_model_server.reset()
    yield fake_model_server
    fake_model_server.reset()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def reset_process_state() -> None:
    """Forget the process's composition root: the next invocation builds it from the env."""
    from stratus import composition

    composition.reset()


@pytest.fixture
def cloud(
    aws_credentials: None, monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> Iterator[dict[str, Any]]:
    """moto with the stack's tables and model secret, and the env the stack sets."""
    import boto3
    from moto import mock_aws

    from tests.tables import create_tables

    with mock_aws():
        names = create_tables(boto3.client("dynamodb"))
        secret = boto3.client("secretsmanager").create_secret(
            Name="stratus/test/model-keys",
            SecretString=json.dumps({"api_keys": ["sk-test-primary"]}),
        )
        from infra.definitions import TABLES

        env = {
            "STRATUS_STAGE": "test",
            # Every table of the stack, under the variable the stack sets for it.
            **{table.env_var: names[table.name] for table in TABLES},
            "STRATUS_MODEL_SECRET_NAME": secret["ARN"],
            "OPENAI_BASE_URL": fake_model.url,
            "STRATUS_AGENT": "triage",
        }
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("STRATUS_OPENAI_API_KEY", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_process_state()
        yield {"tables": names, "secret_arn": secret["ARN"], "model": fake_model}
        reset_process_state()


@pytest.fixture
def serve_agent(monkeypatch: pytest.MonkeyPatch, cloud: dict[str, Any]) -> Any:
    """Make this process behave like the function of the given agent."""

    def _serve(agent: str) -> None:
        monkeypatch.setenv("STRATUS_AGENT", agent)
        reset_process_state()

    return _serve

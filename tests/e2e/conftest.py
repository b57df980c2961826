"""Fixtures for end-to-end tests.

A module whose tests need no settings of their own takes the one default local cloud
of the session (``shared_cloud``: starting a cloud costs seconds of both cores); a
module that changes the stage, the environment or the handlers starts its own
``cloud``. Under ``make test`` every module here runs on one xdist worker, one cloud at a
time (the scheduler in ``tests/conftest.py``; the modules' ``xdist_group`` marks say the
same, but pytest-xdist 3.8 cannot apply them under pytest 9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.local.cloud import LocalCloud
from tests.e2e.helpers import offline_environ

#: The shared cloud, once a module has started it.
_SHARED: list[LocalCloud] = []


@pytest.fixture(scope="session")
def shared_cloud() -> Iterator[LocalCloud]:
    """The session's default local cloud: offline model, free ports, no state file.

    Tests that use it must leave it as they found it (reset the fake model's faults,
    use tenants and keys of their own)."""
    with LocalCloud(
        api_port=0,
        aws_port=0,
        state_file=None,
        log_sink=lambda line: None,
        environ=offline_environ(),
    ) as local:
        _SHARED.append(local)
        try:
            yield local
        finally:
            _SHARED.remove(local)


@pytest.fixture(autouse=True, scope="module")
def _fresh_fake_model_per_module() -> None:
    """Every module starts with the shared cloud's fake model as new (no scripted reply or
    fault another module left behind); module-scoped, so before the module's own fixtures."""
    for cloud in _SHARED:
        if cloud.fake_model is not None:
            cloud.fake_model.reset()


@pytest.fixture(scope="module")
def facts_file(cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's cloud's facts as ``.stratus/local.json`` holds them (the shared cloud
    writes none), for the CLI commands that find a local cloud there (``--state-file``)."""
    assert cloud.facts is not None
    path = tmp_path_factory.mktemp("facts") / "local.json"
    path.write_text(cloud.facts.to_json(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def aws(cloud: LocalCloud) -> Callable[[str], Any]:
    """Plain boto3 clients pointed at the module's local cloud, as a producer would."""
    facts = cloud.facts
    assert facts is not None
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name=facts.region
    )
    return lambda service: session.client(service, endpoint_url=facts.aws_endpoint_url)

"""Fixtures for end-to-end tests; each module defines its own ``cloud`` fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

from infra.local.cloud import LocalCloud


@pytest.fixture(scope="module")
def aws(cloud: LocalCloud) -> Callable[[str], Any]:
    """Plain boto3 clients pointed at the module's local cloud, as a producer would."""
    facts = cloud.facts
    assert facts is not None
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name=facts.region
    )
    return lambda service: session.client(service, endpoint_url=facts.aws_endpoint_url)

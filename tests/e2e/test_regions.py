"""Residency end to end on the local cloud: a tenant homed here is served, with its keys
naming this region; a tenant homed elsewhere gets 403 ``wrong_region`` (docs/regions.md)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from infra.local.cloud import LocalCloud
from infra.local.demo import http
from stratus.tenant_keys import key_region
from stratus.tenants import TenantStore

pytestmark = pytest.mark.xdist_group("local-cloud")


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


def test_home_region_is_served_and_another_region_is_refused(cloud: LocalCloud) -> None:
    facts: Any = cloud.facts
    assert facts is not None
    dynamodb = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name=facts.region
    ).client("dynamodb", endpoint_url=facts.aws_endpoint_url)
    store = TenantStore(facts.tables["tenants"], dynamodb)
    _, here = store.create("regions-e2e-here", home_region=facts.region)
    away = "eu-central-1" if facts.region != "eu-central-1" else "eu-west-1"
    _, elsewhere = store.create("regions-e2e-away", home_region=away)
    assert key_region(here) == facts.region
    url = f"{facts.api_url}/v1/agents/triage/invoke"

    served = http("POST", url, {"input": "Where is my order?"}, {"Authorization": f"Bearer {here}"})
    assert served.status == 200, served.body

    refused = http("POST", url, {"input": "x"}, {"Authorization": f"Bearer {elsewhere}"})
    assert refused.status == 403, refused.body
    error = refused.body["error"]
    assert error["code"] == "wrong_region"
    assert error["details"] == {"home_region": away}

"""Key lifecycle and suspension end to end on the local cloud, as a client sees them.

The cloud's gateway caches authorizer decisions for 2 s here
(``STRATUS_LOCAL_AUTHORIZER_CACHE_S``; 60 s by default, like the stack): a key made over
``POST /v1/keys`` works, is listed, rotates with a grace period, and once revoked (or
its tenant suspended with ``stratus tenant suspend``) is refused after the window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra import keys_cli
from infra.local.cloud import LocalCloud
from infra.local.demo import http
from stratus.audit import AuditEvent
from stratus.audit_dynamo import DynamoAuditStore
from stratus.ddb import Table
from stratus.tenants import TenantStore
from tests.e2e.helpers import offline_environ, wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")

WINDOW_S = 2


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRATUS_LOCAL_AUTHORIZER_CACHE_S", str(WINDOW_S))
        with LocalCloud(
            api_port=0,
            aws_port=0,
            state_file=None,
            log_sink=lambda line: None,
            environ=offline_environ(),
        ) as local:
            yield local


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _status(cloud: LocalCloud, key: str, path: str = "/v1/usage") -> int:
    assert cloud.facts is not None
    return http("GET", cloud.facts.api_url + path, headers=_auth(key)).status


def _refused(cloud: LocalCloud, key: str) -> None:
    """Refused (401) once the cached decision has expired: within the window, plus slack."""
    wait_for(lambda: _status(cloud, key) == 401, timeout=WINDOW_S + 20)


def _events(aws: Callable[[str], Any], cloud: LocalCloud, tenant_id: str) -> list[AuditEvent]:
    assert cloud.facts is not None
    table = Table(cloud.facts.tables["audit"], aws("dynamodb"))
    events, _ = DynamoAuditStore(table).events(tenant_id, limit=200)
    return events


def test_a_key_is_created_used_listed_rotated_and_revoked(
    cloud: LocalCloud, aws: Callable[[str], Any]
) -> None:
    facts = cloud.facts
    assert facts is not None
    admin = _auth(facts.demo_tenant_key)
    created = http("POST", f"{facts.api_url}/v1/keys", {"scopes": ["usage:read"]}, admin)
    assert created.status == 201, created.body
    key, key_id = created.body["key"], created.body["key_id"]
    assert _status(cloud, key) == 200
    refused = http("GET", f"{facts.api_url}/v1/keys", headers=_auth(key))
    assert refused.status == 403 and refused.body["error"]["details"]["missing_scope"] == "admin"

    listed = http("GET", f"{facts.api_url}/v1/keys", headers=admin)
    assert listed.status == 200 and key_id in {k["key_id"] for k in listed.body["keys"]}
    assert key not in str(listed.body)

    rotated = http("POST", f"{facts.api_url}/v1/keys/{key_id}/rotate", {"grace_s": 1}, admin)
    assert rotated.status == 201, rotated.body
    new_key = rotated.body["key"]
    assert _status(cloud, new_key) == 200
    _refused(cloud, key)  # the grace period and then the cache window ran out
    assert _status(cloud, new_key) == 200

    revoked = http("DELETE", f"{facts.api_url}/v1/keys/{rotated.body['key_id']}", headers=admin)
    assert revoked.status == 204
    _refused(cloud, new_key)
    assert _status(cloud, facts.demo_tenant_key) == 200

    mine = _events(aws, cloud, facts.demo_tenant_id)
    types = [e.type for e in mine]
    for wanted in ("key.created", "key.rotated", "key.revoked"):
        assert wanted in types
    reasons = {e.details.get("reason") for e in mine if e.type == "request.refused"}
    assert {"missing_scope", "key_expired", "key_revoked"} <= reasons


def test_a_suspended_tenants_keys_are_refused_until_it_resumes(
    cloud: LocalCloud, aws: Callable[[str], Any], capsys: pytest.CaptureFixture[str]
) -> None:
    facts = cloud.facts
    assert facts is not None
    tenant, key = TenantStore(facts.tables["tenants"], aws("dynamodb")).create("suspendme")
    assert _status(cloud, key) == 200
    where = ["--table", facts.tables["tenants"], "--audit-table", facts.tables["audit"]]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", facts.aws_endpoint_url)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, "local")
        patch.setenv("AWS_DEFAULT_REGION", facts.region)
        assert keys_cli.main(["tenant", "suspend", "--tenant", tenant.tenant_id, *where]) == 0
        _refused(cloud, key)
        assert _status(cloud, facts.demo_tenant_key) == 200  # other tenants are untouched
        assert keys_cli.main(["tenant", "resume", "--tenant", tenant.tenant_id, *where]) == 0
    capsys.readouterr()
    wait_for(lambda: _status(cloud, key) == 200, timeout=WINDOW_S + 20)
    events = _events(aws, cloud, tenant.tenant_id)
    assert [e.type for e in events if e.type.startswith("tenant.")] == [
        "tenant.suspended",
        "tenant.resumed",
    ]
    refusals = [e for e in events if e.type == "request.refused"]
    assert refusals and {e.details["reason"] for e in refusals} == {"tenant_suspended"}
    assert all(e.actor == "operator" for e in events if e.type.startswith("tenant."))

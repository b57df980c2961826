"""``stratus key ...`` and ``stratus tenant suspend|resume`` against the tables on moto."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import keys_cli
from stratus.audit import AuditTrail
from stratus.audit_dynamo import DynamoAuditStore
from stratus.aws import AwsClients
from stratus.tenants import TenantStore, hash_key, key_id_for


@pytest.fixture
def where(cloud: dict[str, Any]) -> list[str]:
    tables = cloud["tables"]
    return ["--table", tables["tenants"], "--audit-table", tables["audit"]]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert keys_cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def audit(cloud: dict[str, Any], tenant_id: str) -> list[dict[str, Any]]:
    store = DynamoAuditStore(AwsClients().table(cloud["tables"]["audit"]))
    events, _ = AuditTrail(store).store.events(tenant_id)  # type: ignore[union-attr]
    return [e.to_json() for e in events]


def test_key_commands_create_list_rotate_revoke_and_audit(
    cloud: dict[str, Any], where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = TenantStore(cloud["tables"]["tenants"])
    tenant, owner = store.create("acme")
    t = tenant.tenant_id
    created = run(
        capsys, "key", "create", "--tenant", t, "--scopes", "invoke,jobs", "--role", "ops",
        "--customer", "c-1", "--expires", "2999-01-01T00:00:00Z", "--json", *where,
    )  # fmt: skip
    key, key_id = created["key"], created["key_id"]
    assert key_id == key_id_for(hash_key(key))
    seen = store.authenticate(key)
    assert seen is not None and seen.scopes == ("invoke", "jobs")
    assert (seen.role, seen.customer_id) == ("ops", "c-1")

    listed = run(capsys, "key", "list", "--tenant", t, "--json", *where)
    assert {k["key_id"] for k in listed["keys"]} == {key_id, key_id_for(hash_key(owner))}
    assert key not in json.dumps(listed) and hash_key(key) not in json.dumps(listed)

    rotated = run(capsys, "key", "rotate", "--tenant", t, key_id, "--grace", "60", "--json", *where)
    assert rotated["replaces"] == key_id and store.authenticate(rotated["key"]) is not None
    assert store.authenticate(key) is not None  # the grace period
    run(capsys, "key", "revoke", "--tenant", t, "--key-id", key_id, "--json", *where)
    assert store.check(key).reason == "key_revoked"

    events = audit(cloud, t)
    assert [e["type"] for e in events] == ["key.created", "key.rotated", "key.revoked"]
    assert {e["actor"] for e in events} == {"operator"}
    assert all(key not in json.dumps(e) and rotated["key"] not in json.dumps(e) for e in events)


def test_tenant_suspend_and_resume(
    cloud: dict[str, Any], where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = TenantStore(cloud["tables"]["tenants"])
    tenant, owner = store.create("acme")
    _, other_key = store.create("other")
    out = run(capsys, "tenant", "suspend", "--tenant", tenant.tenant_id, "--json", *where)
    assert out == {"tenant_id": tenant.tenant_id, "status": "suspended", "keys": 1}
    assert store.check(owner).reason == "tenant_suspended"
    assert store.authenticate(other_key) is not None
    run(capsys, "tenant", "resume", "--tenant", tenant.tenant_id, "--json", *where)
    assert store.authenticate(owner) is not None
    types = [e["type"] for e in audit(cloud, tenant.tenant_id)]
    assert types == ["tenant.suspended", "tenant.resumed"]


def test_refusals_exit_1_with_the_code(
    cloud: dict[str, Any], where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert keys_cli.main(["tenant", "suspend", "--tenant", "0" * 32, *where]) == 1
    assert "tenant_not_found" in capsys.readouterr().err
    tenant, _ = TenantStore(cloud["tables"]["tenants"]).create("acme")
    argv = ["key", "revoke", "--tenant", tenant.tenant_id, "key_" + "0" * 20, *where]
    assert keys_cli.main(argv) == 1
    assert "not_found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        keys_cli.main(["key", "create", "--tenant", tenant.tenant_id, "--scopes", "root", *where])

"""Tool permissions, end-customer scoping and the audit trail end to end on the local cloud.

Keys made over ``POST /v1/keys`` carry a role and an end customer; the model (the
cloud's fake, scripted) asks for ``lookup_order`` whatever it is offered. A ``viewer``
key's invoke and job never run the tool, and the denials are in the trail that
``GET /v1/audit`` and ``stratus audit`` read; a key bound to ``cust-2`` finds the demo
order of ``cust-1`` no more than a missing one; another tenant sees none of it.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra import audit_cli
from infra.local.cloud import LocalCloud
from infra.local.demo import http
from infra.local.fake_model import FakeModelServer, Reply
from stratus.tenants import TenantStore
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


@pytest.fixture
def model(cloud: LocalCloud) -> Iterator[FakeModelServer]:
    fake = cloud.fake_model
    assert fake is not None
    fake.reset()
    yield fake
    fake.reset()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _key(cloud: LocalCloud, **body: Any) -> dict[str, Any]:
    assert cloud.facts is not None
    made = http("POST", f"{cloud.facts.api_url}/v1/keys", body, _auth(cloud.facts.demo_tenant_key))
    assert made.status == 201, made.body
    return dict(made.body)


def _plant_lookup(model: FakeModelServer, order_id: str = "A-1001") -> None:
    model.script(
        Reply(tool_calls=[{"name": "lookup_order", "arguments": {"order_id": order_id}}]),
        Reply(content="Here is what I found."),
    )


def _tool_results(model: FakeModelServer) -> list[dict[str, Any]]:
    last = model.requests[-1].body["messages"]
    return [json.loads(m["content"]) for m in last if m["role"] == "tool"]


def _audit(cloud: LocalCloud, key: str, **query: str) -> list[dict[str, Any]]:
    assert cloud.facts is not None
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    reply = http("GET", f"{cloud.facts.api_url}/v1/audit?{qs}", headers=_auth(key))
    assert reply.status == 200, reply.body
    return list(reply.body["events"])


def _cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="stratus")
    audit_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", *argv])
    out = io.StringIO()
    return audit_cli.main(args, out=out), out.getvalue()


def test_a_viewer_never_runs_lookup_order_and_the_trail_says_so(
    cloud: LocalCloud, model: FakeModelServer, aws: Callable[[str], Any]
) -> None:
    facts = cloud.facts
    assert facts is not None
    viewer = _key(cloud, scopes=["invoke", "jobs", "audit:read"], role="viewer")
    auth = _auth(viewer["key"])
    _plant_lookup(model)
    url = f"{facts.api_url}/v1/agents/order_status/invoke"
    reply = http("POST", url, {"input": "Where is my order A-1001?"}, auth)
    assert reply.status == 200, reply.body
    assert not model.requests[0].body.get("tools")
    assert _tool_results(model)[0]["error"] == "tool_not_permitted"

    # A job runs as the key that submitted it, in the agent's worker.
    _plant_lookup(model)
    job = http(
        "POST", f"{facts.api_url}/v1/jobs", {"agent": "order_status", "input": "A-1001?"}, auth
    )
    assert job.status == 202, job.body
    job_id = job.body["job_id"]

    def finished() -> bool:
        got = http("GET", f"{facts.api_url}/v1/jobs/{job_id}", headers=auth)
        return bool(got.body["status"] in ("succeeded", "failed"))

    wait_for(finished, timeout=60)
    wait_for(lambda: len(_audit(cloud, viewer["key"], type="tool.denied")) >= 2)
    events = _audit(cloud, viewer["key"], type="tool.denied")
    assert [e["actor"] for e in events] == [viewer["key_id"]] * 2
    assert {e["details"]["role"] for e in events} == {"viewer"}
    assert all("A-1001" not in json.dumps(e) for e in events)

    code, out = _cli(
        "--api", facts.api_url, "--key", viewer["key"], "--type", "tool.denied", "--json"
    )
    assert code == 0, out
    assert [e["event_id"] for e in json.loads(out)["events"]] == [e["event_id"] for e in events]
    code, text = _cli("--api", facts.api_url, "--key", viewer["key"], "--type", "tool.denied")
    assert code == 0 and text.count("tool.denied") == 2

    # Another tenant's trail holds none of this; its cursor-less read is its own.
    _, other_key = TenantStore(facts.tables["tenants"], aws("dynamodb")).create("audit-other")
    assert _audit(cloud, other_key) == []
    no_scope = _key(cloud, scopes=["invoke"])
    code, _ = _cli("--api", facts.api_url, "--key", no_scope["key"])
    assert code == 1  # 403 forbidden: the key lacks audit:read


def test_a_key_bound_to_a_customer_sees_only_that_customers_orders(
    cloud: LocalCloud, model: FakeModelServer
) -> None:
    facts = cloud.facts
    assert facts is not None
    url = f"{facts.api_url}/v1/agents/order_status/invoke"
    for customer, found in (("cust-1", True), ("cust-2", False)):
        key = _key(cloud, scopes=["invoke"], role="customer", customer_id=customer)
        _plant_lookup(model)
        reply = http("POST", url, {"input": "Where is A-1001?"}, _auth(key["key"]))
        assert reply.status == 200, reply.body
        (result,) = _tool_results(model)
        assert result["found"] is found
        if not found:
            assert result == {"found": False, "order_id": "A-1001", "error": "order_not_found"}
    executed = _audit(cloud, facts.demo_tenant_key, type="tool.executed")
    assert {e["details"]["role"] for e in executed} >= {"customer"}

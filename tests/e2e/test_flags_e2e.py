"""A kill switch on the local cloud (issue 19, "Done when"): ``stratus flags set
agent_disabled`` for one agent and one tenant turns that agent off for that tenant within
the local cache time (``STRATUS_FLAGS_MAX_AGE_S``, 5 s here), with no redeploy: its
requests get ``503 agent_disabled``, the other agents and the other tenants keep being
answered; removing the rule brings it back within the same time.

The functions read the flags through Powertools' ``AppConfigStore`` from the local
AppConfigData (:mod:`infra.local.moto_appconfig`), exactly as they do on AWS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.cli import main as stratus
from infra.local.cloud import LOCAL_FLAGS_MAX_AGE_S, LocalCloud
from infra.local.demo import http
from stratus.flags.context import tenant_hash
from stratus.tenants import TenantStore
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")
RULE = "flags-e2e off"
#: The cache time, the invoke itself and a margin.
APPLIES_WITHIN_S = LOCAL_FLAGS_MAX_AGE_S + 10


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


@pytest.fixture(scope="module")
def tenant(cloud: LocalCloud, aws: Callable[[str], Any]) -> tuple[str, str]:
    """A tenant of this module's own: (tenant id, API key)."""
    assert cloud.facts is not None
    record, key = TenantStore(cloud.facts.tables["tenants"], aws("dynamodb")).create("flags-e2e")
    return record.tenant_id, key


def _flags(facts_file: Path, *argv: str) -> int:
    return stratus(["flags", *argv, "--state-file", str(facts_file)])


@pytest.fixture
def kill_switch(facts_file: Path, tenant: tuple[str, str]) -> Iterator[Callable[[], int]]:
    """Turns ``support`` off for the module's tenant; the rule is removed afterwards."""
    tenant_id, _ = tenant

    def on() -> int:
        return _flags(
            facts_file,
            "set",
            "agent_disabled",
            "--rule",
            RULE,
            "--when",
            "true",
            "--condition",
            "agent=EQUALS:support",
            "--condition",
            f"tenant_id=EQUALS:{tenant_id}",
        )

    yield on
    _flags(facts_file, "set", "agent_disabled", "--remove-rule", RULE)


def _invoke(cloud: LocalCloud, key: str, agent: str) -> tuple[int, str]:
    assert cloud.facts is not None
    reply = http(
        "POST",
        f"{cloud.facts.api_url}/v1/agents/{agent}/invoke",
        {"input": "Hello there"},
        {"Authorization": f"Bearer {key}"},
    )
    code = ""
    if isinstance(reply.body, dict) and isinstance(reply.body.get("error"), dict):
        code = str(reply.body["error"].get("code", ""))
    return reply.status, code


def test_a_kill_switch_turns_one_agent_off_for_a_segment_and_back(
    cloud: LocalCloud, tenant: tuple[str, str], kill_switch: Callable[[], int], facts_file: Path
) -> None:
    assert cloud.facts is not None
    _, key = tenant
    demo_key = cloud.facts.demo_tenant_key
    assert _invoke(cloud, key, "support")[0] == 200
    assert kill_switch() == 0

    started = time.monotonic()
    assert wait_for(
        lambda: _invoke(cloud, key, "support") == (503, "agent_disabled"),
        timeout=APPLIES_WITHIN_S,
        every=0.5,
    )
    assert time.monotonic() - started < APPLIES_WITHIN_S
    assert _invoke(cloud, key, "triage")[0] == 200  # the other agents keep answering
    assert _invoke(cloud, demo_key, "support")[0] == 200  # and the other tenants

    assert _flags(facts_file, "set", "agent_disabled", "--remove-rule", RULE) == 0
    assert wait_for(
        lambda: _invoke(cloud, key, "support")[0] == 200, timeout=APPLIES_WITHIN_S, every=0.5
    )


ROLLOUT_RULE = "flags-e2e rollout"


def _model(cloud: LocalCloud, key: str) -> str:
    assert cloud.facts is not None
    reply = http(
        "POST",
        f"{cloud.facts.api_url}/v1/agents/triage/invoke",
        {"input": "Hello there"},
        {"Authorization": f"Bearer {key}"},
    )
    assert reply.status == 200, reply.body
    assert isinstance(reply.body, dict)
    return str(reply.body["model"])


def test_a_percentage_rollout_sends_its_share_of_tenants_to_the_new_tier(
    cloud: LocalCloud, aws: Callable[[str], Any], facts_file: Path
) -> None:
    """``--rollout 50 --value smart`` on ``model_tier``: the tenants whose bucket
    (``tenant_hash % 100``) is below 50 get the smart tier's model, the others keep the
    spec's, the same tenants on every request; nothing is redeployed."""
    assert cloud.facts is not None
    store = TenantStore(cloud.facts.tables["tenants"], aws("dynamodb"))
    tenants: list[tuple[Any, str]] = []
    while len(tenants) < 40:  # ids are random: at least 3 tenants on each side of the split
        tenants.append(store.create(f"rollout-{len(tenants)}"))
        inside = sum(tenant_hash(record.tenant_id) % 100 < 50 for record, _ in tenants)
        if min(inside, len(tenants) - inside) >= 3:
            break
    ids = [record.tenant_id for record, _ in tenants]
    smart = {t for t in ids if tenant_hash(t) % 100 < 50}
    assert 3 <= len(smart) <= len(ids) - 3
    fast_model = _model(cloud, tenants[0][1])  # before the flag: the spec's tier for all
    assert {_model(cloud, key) for _, key in tenants[1:]} == {fast_model}
    assert (
        _flags(
            facts_file,
            "set",
            "model_tier",
            "--rollout",
            "50",
            "--value",
            "smart",
            "--rule",
            ROLLOUT_RULE,
            "--condition",
            "agent=EQUALS:triage",
            "--condition",
            f"tenant_id=IN:{json.dumps(ids)}",  # only this test's tenants
        )
        == 0
    )
    try:

        def models() -> dict[str, str]:
            return {record.tenant_id: _model(cloud, key) for record, key in tenants}

        def split() -> bool:
            seen = models()
            return all((seen[t] != fast_model) == (t in smart) for t in ids)

        assert wait_for(split, timeout=APPLIES_WITHIN_S, every=0.5)
        again = models()  # deterministic per tenant: the same split on the next requests
        assert {t for t, model in again.items() if model != fast_model} == smart
    finally:
        assert _flags(facts_file, "set", "model_tier", "--remove-rule", ROLLOUT_RULE) == 0

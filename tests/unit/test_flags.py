"""Feature flags, evaluated: the context and its tenant hash, percentage rollouts, rules
by tier, agent and end customer, and the documents (default and schema). No AWS."""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import jsonschema
import pytest
from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator

from stratus.agents import Principal
from stratus.config import Settings
from stratus.errors import AgentDisabled
from stratus.flags import (
    AgentFlags,
    FlagContext,
    StaticFlags,
    admit,
    applied,
    bound,
    default_document,
    flag_context,
    resolve,
    tenant_hash,
)
from stratus.flags.decisions import NEUTRAL
from stratus.flags.store import DOCUMENT_SCHEMA

TENANTS = [f"tenant-{i:04d}" for i in range(1000)]


def rule(when: Any, *conditions: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "when_match": when,
        "conditions": [{"action": a, "key": k, "value": v} for a, k, v in conditions],
    }


def document(**features: dict[str, Any]) -> dict[str, Any]:
    """The default document with ``features``' rules added."""
    doc = json.loads(json.dumps(default_document()))
    for name, rules in features.items():
        doc[name]["rules"] = rules
    return doc


def rollout(end: int) -> dict[str, Any]:
    """``model_tier`` = smart for the tenants whose hash bucket (0..99) is 0..``end``."""
    return document(
        model_tier={
            "rollout": rule(
                "smart", ("MODULO_RANGE", "tenant_hash", {"BASE": 100, "START": 0, "END": end})
            )
        }
    )


def ctx(tenant: str = "tenant-a", **kw: Any) -> FlagContext:
    return FlagContext(tenant_id=tenant, agent=kw.pop("agent", "triage"), stage="test", **kw)


def test_the_tenant_hash_is_the_first_8_bytes_of_sha256_and_never_changes() -> None:
    digest = hashlib.sha256(b"tenant-a").digest()
    assert tenant_hash("tenant-a") == int.from_bytes(digest[:8], "big")
    assert tenant_hash("tenant-a") == tenant_hash("tenant-a") != tenant_hash("tenant-b")
    assert 0 <= tenant_hash("x") < 2**64
    # A fixed value: the same bucket in every process, region and release.
    assert tenant_hash("tenant-0001") == int.from_bytes(
        hashlib.sha256(b"tenant-0001").digest()[:8], "big"
    )


def test_the_context_has_every_contract_key() -> None:
    settings = Settings(stage="prod")
    who = Principal(key_id="k", customer_id="cust-1", tier="enterprise")
    values = flag_context(
        settings, agent="triage", tenant_id="t-1", principal=who, release="r-abc"
    ).as_dict()
    assert values == {
        "tenant_id": "t-1",
        "tenant_tier": "enterprise",
        "tenant_hash": tenant_hash("t-1"),
        "agent": "triage",
        "release": "r-abc",
        "customer_id": "cust-1",
        "stage": "prod",
    }
    bare = flag_context(settings, agent="triage", tenant_id="t-1").as_dict()
    assert bare["tenant_tier"] == "standard" and bare["customer_id"] == "" and bare["release"] == ""


def test_a_10_percent_rollout_lands_7_to_13_percent_and_is_stable_per_tenant() -> None:
    flags = StaticFlags(rollout(9))
    chosen = {t for t in TENANTS if resolve(flags, ctx(t)).model_tier == "smart"}
    assert 70 <= len(chosen) <= 130, len(chosen)
    again = StaticFlags(rollout(9))  # another process: the same tenants
    assert chosen == {t for t in TENANTS if resolve(again, ctx(t)).model_tier == "smart"}
    wider = StaticFlags(rollout(19))  # widening keeps the first share in
    widened = {t for t in TENANTS if resolve(wider, ctx(t)).model_tier == "smart"}
    assert chosen < widened and 150 <= len(widened) <= 250
    others = [t for t in TENANTS if t not in chosen]
    assert resolve(flags, ctx(others[0])).model_tier is None  # the rest: the spec's tier


def test_rules_segment_by_tier_agent_and_customer() -> None:
    flags = StaticFlags(
        document(
            agent_disabled={
                "free tier of triage": rule(
                    True, ("EQUALS", "agent", "triage"), ("IN", "tenant_tier", ["free"])
                )
            },
            prompt_version={"pilot customer": rule("v2", ("EQUALS", "customer_id", "cust-7"))},
            tools_disabled={
                "enterprise": rule(["lookup"], ("EQUALS", "tenant_tier", "enterprise"))
            },
            guardrail_classifier={"one tenant": rule(True, ("EQUALS", "tenant_id", "t-9"))},
        )
    )
    assert resolve(flags, ctx(tenant_tier="free")).disabled
    assert not resolve(flags, ctx(tenant_tier="free", agent="support")).disabled
    assert not resolve(flags, ctx(tenant_tier="standard")).disabled
    assert resolve(flags, ctx(customer_id="cust-7")).prompt_version == "v2"
    assert resolve(flags, ctx(customer_id="cust-8")).prompt_version is None
    assert resolve(flags, ctx(tenant_tier="enterprise")).tools_disabled == {"lookup"}
    assert resolve(flags, ctx("t-9")).classifier is True
    assert resolve(flags, ctx("t-8")).classifier is None


def test_the_default_document_changes_nothing() -> None:
    flags = resolve(StaticFlags(), ctx())
    assert flags == AgentFlags(agent="triage")
    assert set(default_document()) == set(NEUTRAL)


def test_admit_refuses_a_disabled_agent_with_503() -> None:
    flags = StaticFlags(document(agent_disabled={"off": rule(True, ("EQUALS", "agent", "triage"))}))
    with pytest.raises(AgentDisabled) as raised:
        admit(flags, ctx())
    assert raised.value.status == 503 and raised.value.code == "agent_disabled"
    assert raised.value.details == {"agent": "triage"}
    assert admit(flags, ctx(agent="support")).disabled is False


def test_nonsense_values_are_ignored_not_fatal() -> None:
    flags = StaticFlags(
        document(
            model_tier={"x": rule("huge", ("EQUALS", "agent", "triage"))},
            tools_enabled={"x": rule("lookup", ("EQUALS", "agent", "triage"))},
            guardrail_classifier={"x": rule("maybe", ("EQUALS", "agent", "triage"))},
        )
    )
    assert resolve(flags, ctx()) == AgentFlags(agent="triage")


def test_a_document_powertools_refuses_falls_back_to_the_defaults() -> None:
    broken = {"agent_disabled": {"default": None}}  # Powertools: a default must be present
    assert resolve(StaticFlags(broken), ctx()) == AgentFlags(agent="triage")


def test_bound_flags_reach_only_their_agent_and_only_inside() -> None:
    flags = AgentFlags(agent="triage", model_tier="smart")
    assert bound("triage") == AgentFlags(agent="triage")
    with applied(flags):
        assert bound("triage") is flags
        assert bound("summarizer") == AgentFlags(agent="summarizer")
    assert bound("triage") == AgentFlags(agent="triage")


def test_tool_filters() -> None:
    only = AgentFlags(tools_enabled=frozenset({"a", "b"}), tools_disabled=frozenset({"b"}))
    assert [t for t in ("a", "b", "c") if only.offers(t)] == ["a"]
    assert not AgentFlags().changes_tools and only.changes_tools


# -- the documents --------------------------------------------------------------------


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT_SCHEMA.read_text(encoding="utf-8"))
    return loaded


def test_the_schema_is_draft_4_and_accepts_the_default_and_real_rollouts() -> None:
    jsonschema.Draft4Validator.check_schema(schema())  # what AppConfig's validator reads
    validator = jsonschema.Draft4Validator(schema())
    for doc in (
        default_document(),
        rollout(9),
        document(agent_disabled={"off": rule(True, ("EQUALS", "agent", "triage"))}),
        document(tools_enabled={"two": rule(["a", "b"], ("IN", "tenant_tier", ["free"]))}),
        {**default_document(), "my_feature": {"default": {"x": 1}, "boolean_type": False}},
    ):
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, errors
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Powertools warns on empty rules: none here
            SchemaValidator(doc).validate()


@pytest.mark.parametrize(
    "bad",
    [
        {"agent_disabled": {"default": None}},
        {"agent_disabled": {"default": "yes"}},
        {"model_tier": {"default": "huge", "boolean_type": False}},
        {"model_tier": {"default": ""}},  # a non-boolean feature must say so
        {"x": {"default": True, "rules": {"r": rule(True, ("LIKE", "agent", "t"))}}},
        {"x": {"default": True, "rules": {"r": rule(True, ("MODULO_RANGE", "tenant_hash", 5))}}},
        {"x": {"default": True, "rules": {"r": {"when_match": True, "conditions": []}}}},
        {"x": {"default": True, "rules": {"r": rule("on", ("EQUALS", "agent", "t"))}}},
        {"x": {"default": True, "extra": 1}},
    ],
)
def test_the_schema_refuses_what_powertools_or_stratus_would(bad: dict[str, Any]) -> None:
    assert list(jsonschema.Draft4Validator(schema()).iter_errors(bad))

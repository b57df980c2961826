"""Fairness in the synthesized template: bounded worker concurrency, reserved concurrency,
the public routes' own throttling, and the tenant limits reaching the functions."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import load_stage
from tests.infra.conftest import Synthesized


def _functions_by_construct(synthesized: Synthesized, stage: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in synthesized.resources(stage, "AWS::Lambda::Function").items()
    }


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_sqs_event_source_mapping_has_the_stages_maximum_concurrency(
    synthesized: Synthesized, stage: str
) -> None:
    mappings = synthesized.resources(stage, "AWS::Lambda::EventSourceMapping")
    expected = load_stage(stage).job_max_concurrency
    assert expected >= 2
    # The ingest queue, the callbacks queue and one job queue per agent.
    assert len(mappings) >= 3
    for logical_id, mapping in mappings.items():
        scaling = mapping["Properties"].get("ScalingConfig")
        assert scaling == {"MaximumConcurrency": expected}, logical_id


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_public_routes_are_throttled_on_their_own(synthesized: Synthesized, stage: str) -> None:
    config = load_stage(stage)
    (api_stage,) = synthesized.resources(stage, "AWS::ApiGateway::Stage").values()
    settings = {
        (s["ResourcePath"], s["HttpMethod"]): s for s in api_stage["Properties"]["MethodSettings"]
    }
    every = settings[("/*", "*")]
    assert every["ThrottlingRateLimit"] == config.api_throttle_rate
    assert every["ThrottlingBurstLimit"] == config.api_throttle_burst
    for path in ("/~1v1~1health", "/~1v1~1openapi.json"):
        public = settings[(path, "GET")]
        assert public["ThrottlingRateLimit"] == config.public_throttle_rate
        assert public["ThrottlingBurstLimit"] == config.public_throttle_burst
        assert public["LoggingLevel"] == "INFO" and public["MetricsEnabled"] is True
        assert public["DataTraceEnabled"] is False
    # Only those two: every tenant route shares the stage's limits (and its own tenant's).
    assert len(settings) == 3


def test_reserved_concurrency_of_the_platform_function_comes_from_the_stage(
    synthesized: Synthesized,
) -> None:
    for stage in ("dev", "prod"):
        reserved = load_stage(stage).platform_reserved_concurrency
        platform = [
            props
            for props in _functions_by_construct(synthesized, stage).values()
            if props.get("Description", "").startswith("Stratus platform routes")
        ]
        assert len(platform) == 1
        assert platform[0].get("ReservedConcurrentExecutions") == reserved
    assert load_stage("prod").platform_reserved_concurrency is not None


def test_the_stage_reserves_an_agents_concurrency_over_its_spec() -> None:
    from functions.agents import load_all
    from infra.topology.functions import agent_plan, function_plans

    specs = load_all()
    stage = load_stage("dev").model_copy(update={"agent_reserved_concurrency": {"triage": 7}})
    assert agent_plan(specs["triage"], stage).reserved_concurrency == 7
    others = [a for a in specs if a != "triage"]
    assert all(
        agent_plan(specs[a], stage).reserved_concurrency == specs[a].deployment.reserved_concurrency
        for a in others
    )
    wrong = stage.model_copy(update={"agent_reserved_concurrency": {"nope": 3}})
    with pytest.raises(ValueError, match="agent_reserved_concurrency"):
        function_plans(wrong, specs)


def test_the_tenant_limits_reach_the_api_and_ingest_functions(synthesized: Synthesized) -> None:
    config = load_stage("prod")
    found = 0
    for props in _functions_by_construct(synthesized, "prod").values():
        env = props.get("Environment", {}).get("Variables", {})
        description = props.get("Description", "")
        if description.startswith(("Stratus platform routes", "Stratus agent ")):
            assert env["STRATUS_TENANT_RATE_LIMIT_RPS"] == str(config.tenant_rate_limit_rps)
            assert env["STRATUS_TENANT_RATE_LIMIT_BURST"] == str(config.tenant_rate_limit_burst)
            assert "STRATUS_LIMITS_TABLE" in env  # the shared buckets
            found += 1
        if description.startswith("Stratus ingest"):
            assert env["STRATUS_MAX_QUEUED_JOBS"] == str(config.max_queued_jobs)
            assert "STRATUS_BUDGETS_TABLE" in env  # a tenant's own cap
            found += 1
    assert found >= 3

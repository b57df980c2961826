"""cdk-nag: no unsuppressed finding, and every suppression is specific, explained and used."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import STAGES, Synthesized

pytestmark = pytest.mark.infra

PACKS = ("AwsSolutions", "Serverless")


def _suppressions(template: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(logical id, construct path, suppression) for every suppression in the template."""
    found = []
    for logical_id, resource in template["Resources"].items():
        metadata = resource.get("Metadata", {})
        for rule in metadata.get("cdk_nag", {}).get("rules_to_suppress", []):
            found.append((logical_id, metadata.get("aws:cdk:path", ""), rule))
    return found


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("pack", PACKS)
def test_no_unsuppressed_findings(synthesized: Synthesized, stage: str, pack: str) -> None:
    from aws_cdk.assertions import Annotations, Match

    annotations = Annotations.from_stack(synthesized.stacks[stage])
    pattern = Match.string_like_regexp(f"{pack}-.*")
    errors = annotations.find_error("*", pattern)
    warnings = annotations.find_warning("*", pattern)
    assert not errors, [(e.id, e.entry.data) for e in errors]
    assert not warnings, [(w.id, w.entry.data) for w in warnings]


@pytest.mark.parametrize("stage", STAGES)
def test_every_suppression_has_a_specific_reason(synthesized: Synthesized, stage: str) -> None:
    suppressions = _suppressions(synthesized.templates[stage])
    assert suppressions
    for logical_id, _, rule in suppressions:
        assert rule["id"].startswith(PACKS), (logical_id, rule)
        assert len(rule.get("reason", "").strip()) >= 20, (logical_id, rule)
        if rule["id"] in ("AwsSolutions-IAM4", "AwsSolutions-IAM5"):
            assert rule.get("applies_to"), f"{rule['id']} must name what it allows: {logical_id}"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stack_wide_suppression(synthesized: Synthesized, stage: str) -> None:
    template = synthesized.templates[stage]
    assert "cdk_nag" not in template.get("Metadata", {})


@pytest.mark.parametrize("stage", STAGES)
def test_every_suppression_is_used(synthesized: Synthesized, stage: str) -> None:
    """A suppression for a finding that no longer fires hides the next real one."""
    suppressed = {
        (row["Resource ID"], row["Rule ID"])
        for row in synthesized.nag_report(stage)
        if row["Compliance"] == "Suppressed"
    }
    for logical_id, path, rule in _suppressions(synthesized.templates[stage]):
        assert (path, rule["id"]) in suppressed, f"unused suppression {rule['id']} on {logical_id}"

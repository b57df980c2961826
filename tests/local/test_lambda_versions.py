"""Versions and the weighted alias of the local Lambda runtime, and what each version did."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.aws_front import AwsFront, qualifier_of
from infra.local.lambda_runtime import FunctionConfig, FunctionNotFound, LambdaRuntime
from infra.local.lambda_versions import Alias, VersionRecord

ANSWER = "tests.local.handlers.answer.handler"


def _body(result: Any) -> dict[str, Any]:
    assert result.ok, result.error
    body: dict[str, Any] = json.loads(result.payload["body"])
    return body


@pytest.fixture
def runtime() -> Iterator[LambdaRuntime]:
    config = FunctionConfig("answer", ANSWER, {"STRATUS_RELEASE": "r-stable"}, timeout_s=10)
    with LambdaRuntime(
        [config], log_sink=lambda line: None, platform_logs=False, forward_metrics=False
    ) as rt:
        yield rt


def _candidate(runtime: LambdaRuntime, **env: str) -> str:
    base = runtime.function("answer")
    config = dataclasses.replace(base, environment={**base.environment, **env})
    return runtime.add_version("answer", config)


def test_the_alias_sends_exactly_the_weighted_share_to_the_candidate(
    runtime: LambdaRuntime,
) -> None:
    label = _candidate(runtime, ANSWER_MODEL="candidate-model")
    assert label == "1"
    # Published but without weight: it serves nobody unqualified ...
    assert {_body(runtime.invoke("answer", {}))["model"] for _ in range(3)} == {"stable-model"}
    # ... and exactly what a Qualifier names.
    result = runtime.invoke("answer", {}, qualifier=label)
    assert result.version == "1" and _body(result)["version"] == "1"
    assert runtime.invoke("answer", {}, qualifier="$LATEST").version == "$LATEST"
    runtime.route("answer", {"$LATEST": 90, label: 10})
    runtime.version_stats("answer", reset=True)
    versions = [runtime.invoke("answer", {}).version for _ in range(20)]
    assert versions.count("1") == 2 and versions.count("$LATEST") == 18
    stats = runtime.version_stats("answer")
    assert stats["1"]["requests"] == 2 and stats["$LATEST"]["requests"] == 18
    assert stats["1"]["models"] == ["candidate-model"]


def test_unknown_versions_and_bad_weights_are_refused(runtime: LambdaRuntime) -> None:
    with pytest.raises(FunctionNotFound):
        runtime.invoke("answer", {}, qualifier="7")
    with pytest.raises(FunctionNotFound):
        runtime.route("answer", {"7": 1})
    with pytest.raises(ValueError, match="positive weight"):
        runtime.route("answer", {"$LATEST": 0})
    with pytest.raises(ValueError, match="primary"):
        runtime.drop_version("answer", "$LATEST")


def test_errors_cost_and_durations_are_counted_per_version(runtime: LambdaRuntime) -> None:
    label = _candidate(runtime, ANSWER_STATUS="502", ANSWER_COST="0.5")
    runtime.route("answer", {"$LATEST": 1, label: 1})
    for _ in range(4):
        runtime.invoke("answer", {})
    stats = runtime.version_stats("answer")
    assert stats[label]["requests"] == 2 and stats[label]["errors"] == 2
    assert stats[label]["tasks"] == 0  # a 5xx answer is not a finished task
    stable = stats["$LATEST"]
    assert stable["errors"] == 0 and stable["tasks"] == 2
    assert stable["cost_usd"] == pytest.approx(0.002) and stable["cost_source"] == "answers"
    assert len(stable["durations_ms"]) == 2


def test_rollback_drops_the_candidate_and_promote_replaces_the_stable_version(
    runtime: LambdaRuntime, tmp_path: Path
) -> None:
    bad = _candidate(runtime, ANSWER_MODEL="bad")
    runtime.route("answer", {"$LATEST": 1, bad: 1})
    runtime.drop_version("answer", bad)
    assert runtime.versions("answer")["versions"] == ["$LATEST"]
    assert {_body(runtime.invoke("answer", {}))["model"] for _ in range(4)} == {"stable-model"}
    with pytest.raises(FunctionNotFound):
        runtime.invoke("answer", {}, qualifier=bad)

    good = runtime.add_version(
        "answer",
        dataclasses.replace(
            runtime.function("answer"),
            environment={"ANSWER_MODEL": "good", "STRATUS_RELEASE": ""},
        ),
        cwd=tmp_path,
    )
    assert good == "2"  # version numbers are never reused
    runtime.route("answer", {"$LATEST": 1, good: 1})
    runtime.promote("answer", good)
    assert runtime.versions("answer") == {
        "primary": "2",
        "versions": ["2"],
        "alias": {"weights": {}, "shadow": None},
    }
    bodies = [_body(runtime.invoke("answer", {})) for _ in range(4)]
    assert {b["model"] for b in bodies} == {"good"}
    assert {b["cwd"] for b in bodies} == {str(tmp_path.resolve())}  # its own code directory
    assert {b["release_env"] for b in bodies} == {""}


def test_a_shadow_gets_a_copy_and_its_answer_is_never_returned(runtime: LambdaRuntime) -> None:
    label = _candidate(runtime, ANSWER_MODEL="shadow")
    runtime.route("answer", {"$LATEST": 1}, shadow=label)
    models = {_body(runtime.invoke("answer", {}))["model"] for _ in range(3)}
    assert models == {"stable-model"}
    runtime.drop_version("answer", label)  # drains the copies in flight first
    assert runtime.versions("answer")["alias"]["shadow"] is None


def test_metrics_lines_give_the_cost_per_task_when_the_function_emits_them() -> None:
    record = VersionRecord()
    emf = {
        "_aws": {
            "Timestamp": 0,
            "CloudWatchMetrics": [
                {
                    "Namespace": "Stratus",
                    "Dimensions": [["agent", "release"]],
                    "Metrics": [{"Name": n} for n in ("CostMicroUSD", "Tasks", "TaskErrors")],
                }
            ],
        },
        "agent": "t",
        "release": "r-1",
        "CostMicroUSD": 2500.0,
        "Tasks": 1,
        "TaskErrors": 1,
    }
    record.record_metrics(emf)
    record.record_metrics({**emf, "TaskErrors": 0})
    record.record_metrics({"_aws": {"CloudWatchMetrics": [{"Metrics": [{"Name": "Other"}]}]}})
    record.record(None, {"statusCode": 200, "body": json.dumps({"cost_usd": 9.0})}, 5.0)
    snap = record.snapshot()
    assert (snap["tasks"], snap["cost_source"]) == (2, "metrics")
    assert snap["cost_usd"] == pytest.approx(0.005) and snap["errors"] == 1


def test_the_alias_round_robin_is_smooth() -> None:
    alias = Alias()
    alias.set({"a": 3, "b": 1})
    assert [alias.pick("a") for _ in range(8)] == ["a", "a", "b", "a"] * 2


def test_the_front_honours_the_qualifier(runtime: LambdaRuntime) -> None:
    label = _candidate(runtime, ANSWER_MODEL="candidate-model")

    def invoke(name: str, event: Any, qualifier: str | None) -> Any:
        return runtime.invoke(name, event, qualifier=qualifier)

    front = AwsFront(0, invoke, known=lambda n: n == "answer").start()
    try:
        for suffix, model, version in (
            (f"?Qualifier={label}", "candidate-model", label),
            ("?Qualifier=%24LATEST", "stable-model", "$LATEST"),
            ("", "stable-model", "$LATEST"),
        ):
            request = urllib.request.Request(
                f"{front.url}/2015-03-31/functions/answer/invocations{suffix}",
                data=b"{}",
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = json.loads(response.read())
                assert response.headers["X-Amz-Executed-Version"] == version
            assert json.loads(payload["body"])["model"] == model
        request = urllib.request.Request(
            f"{front.url}/2015-03-31/functions/answer/invocations?Qualifier=9",
            data=b"{}",
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(request, timeout=30)
        assert missing.value.code == 404
        assert missing.value.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    finally:
        front.stop()


def test_qualifiers_from_arns_and_queries() -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:f"
    assert qualifier_of(arn) is None
    assert qualifier_of(f"{arn}:live") == "live"
    assert qualifier_of("f:3") == "3" and qualifier_of("f") is None
    assert qualifier_of("f", "Qualifier=2") == "2"

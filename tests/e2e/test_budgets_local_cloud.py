"""Budgets that hold, end to end: 50 concurrent HTTP invokes on the local cloud.

The tenant's daily limit is set with ``stratus budget set`` through the local AWS
endpoint; 50 requests then arrive at once through the local API Gateway, run in
the agent function's warm worker processes, and reserve on the budgets table of
moto's server. moto's DynamoDB is made as atomic per request as DynamoDB
(``infra.local.moto_atomic``, installed in moto's server process).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.agents import load_agent
from infra.local.cloud import LOCAL_CREDENTIALS, REGION, LocalCloud
from infra.local.demo import http
from stratus.budgets import from_nano
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.tokens import estimate_prompt_tokens
from tests.e2e.helpers import offline_environ

pytestmark = pytest.mark.xdist_group("local-cloud")

TEXT = "I was charged twice for order A-1001"


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCloud]:
    environ = offline_environ()
    with LocalCloud(
        api_port=0, aws_port=0, state_file=None, log_sink=lambda line: None, environ=environ
    ) as cloud:
        yield cloud


def _reservation(settings: Settings) -> tuple[Decimal, int]:
    spec = load_agent("triage")
    assert spec.output_schema is not None
    messages = [
        {"role": "system", "content": spec.system_prompt},
        {"role": "user", "content": TEXT},
    ]
    bound = estimate_prompt_tokens(messages, (), spec.output_schema.model_json_schema())
    gateway = Runtime(settings).gateway
    models = (*settings.model_chain("fast"), *settings.downgrade_chain("fast"))
    return gateway.worst_case(models, bound, spec.limits.max_output_tokens), bound


def test_50_concurrent_http_invokes_against_room_for_10(
    local: LocalCloud, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = local.facts
    assert facts is not None
    reservation, bound = _reservation(Settings(_env_file=None))  # type: ignore[call-arg]
    limit = reservation * 10

    # The operator's command, against the local AWS endpoint.
    for name, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", facts.aws_endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    from infra.cli import main

    assert (
        main(
            [
                "budget",
                "set",
                "--tenant",
                facts.demo_tenant_id,
                "--daily-usd",
                str(limit),
                "--table",
                facts.tables["budgets"],
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["daily_usd"] == str(limit)

    # Every answer costs its full reservation, and is held long enough to overlap.
    root = facts.model_base_url.rstrip("/").removesuffix("/v1")
    reply = {
        "content": '{"category": "billing", "confidence": 0.9, "summary": "charged twice"}',
        "usage": {"prompt_tokens": bound, "completion_tokens": 512},
    }
    assert http("POST", f"{root}/_fake/replies", [reply] * 50).status == 200
    assert (
        http("POST", f"{root}/_fake/faults", {"status": 200, "delay_s": 0.3, "times": -1}).status
        == 200
    )

    start = threading.Barrier(50)
    headers = {"Authorization": f"Bearer {facts.demo_tenant_key}"}

    def one(_: int) -> tuple[int, Any]:
        start.wait()
        answer = http(
            "POST",
            f"{facts.api_url}/v1/agents/triage/invoke",
            {"input": TEXT},
            headers,
            timeout=120,
        )
        return answer.status, answer.body

    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            outcomes = list(pool.map(one, range(50)))
    finally:
        http("POST", f"{root}/_fake/reset", {})

    ok = [body for status, body in outcomes if status == 200]
    refused = [body for status, body in outcomes if status == 429]
    assert len(ok) + len(refused) == 50, [s for s, _ in outcomes]
    assert len(ok) <= 10
    assert len(ok) == 10  # each answer cost exactly its reservation: the room was used
    for body in refused:
        assert body["error"]["code"] == "budget_exceeded"
        assert body["error"]["details"]["resets_at"].endswith("T00:00:00Z")

    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=facts.aws_endpoint_url,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    item = dynamodb.get_item(
        TableName=facts.tables["budgets"],
        Key={"pk": {"S": f"TENANT#{facts.demo_tenant_id}#DAY#{day}"}},
        ConsistentRead=True,
    )["Item"]
    spent = from_nano(item["spent"]["N"])
    assert spent <= limit + reservation
    assert spent == from_nano(item["committed"]["N"])  # nothing left reserved

    # The tenant sees its spend through GET /v1/usage.
    usage = http("GET", f"{facts.api_url}/v1/usage?period=day", None, headers)
    assert usage.status == 200, usage.body
    assert Decimal(usage.body["agents"]["triage"]["cost_usd"]) == spent

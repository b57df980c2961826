"""The synchronous invoke path: real handler, moto, real openai client over HTTP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.handlers import api
from infra.local.fake_model import FakeModelServer, Fault, Reply
from stratus.prices import load_price_table
from stratus.usage import Usage
from tests.support import FakeLambdaContext, api_event, call


def expected_cost(model: str, usage: dict[str, int]) -> float:
    """Cost computed by hand from the price table, independently of the runtime."""
    price = load_price_table().models[model]
    uncached = usage["input_tokens"] - usage["cached_input_tokens"]
    total = (
        Decimal(uncached) * price.input
        + Decimal(usage["cached_input_tokens"]) * price.cached_input
        + Decimal(usage["output_tokens"]) * price.output
    ) / Decimal(1_000_000)
    return float(total.quantize(Decimal("0.00000001")))


def invoke(agent: str, body: Any, **kwargs: Any) -> Any:
    return call(api.lambda_handler, api_event(agent, body=body, **kwargs))


def test_triage_classifies_with_usage_and_cost(
    serve_agent: Any, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")
    event = api_event(
        "triage", body={"input": "Where is my order A-1001?", "metadata": {"ch": "x"}}
    )
    reply = call(api.lambda_handler, event)

    assert reply.status == 200, reply.body
    body = reply.body
    assert body["output"]["category"] == "order_status"
    assert 0 <= body["output"]["confidence"] <= 1
    assert body["model"] == "gpt-5-mini"
    from functions.agents import load_agent
    from stratus.config import Settings
    from stratus.releases import release_of

    release = release_of(load_agent("triage"), Settings())
    assert body["agent"] == {
        "name": "triage",
        "version": "1.0.0",
        "release": release,
        "prompt_version": "v1",
    }
    assert body["request_id"] == event["requestContext"]["requestId"]
    usage = body["usage"]
    assert set(usage) == {
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
    }
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert 0 < usage["reasoning_tokens"] <= usage["output_tokens"]  # gpt-5 models reason
    assert body["cost_usd"] == expected_cost("gpt-5-mini", usage)
    # The request the provider saw: the versioned system prompt, strict JSON schema, our key.
    (seen,) = fake_model.requests
    assert seen.api_key == "sk-test-primary"
    assert seen.body["messages"][0]["role"] == "system"
    assert "triage step" in seen.body["messages"][0]["content"]
    assert seen.body["response_format"]["type"] == "json_schema"
    assert seen.body["max_completion_tokens"] == 512


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("I want to return my shoes", "return_request"),
        ("I was billed twice", "billing"),
        ("hello there", "other"),
    ],
)
def test_triage_categories(serve_agent: Any, message: str, category: str) -> None:
    serve_agent("triage")
    reply = invoke("triage", {"input": message})
    assert reply.status == 200
    assert reply.body["output"]["category"] == category


def put_order(table: str, tenant_id: str, order_id: str, status: str) -> None:
    boto3.resource("dynamodb").Table(table).put_item(
        Item={
            "tenant_id": tenant_id,
            "order_id": order_id,
            "status": status,
            "carrier": "DHL",
            "eta": "2026-11-24",
            "items": ["running shoes"],
        }
    )


def test_order_status_uses_the_tool_within_the_callers_tenant(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    serve_agent("order_status")
    orders = cloud["tables"]["orders"]
    put_order(orders, "tenant-a", "A-1001", "in_transit")
    put_order(orders, "tenant-b", "A-1001", "delivered")

    reply = invoke("order_status", {"input": "Where is my order A-1001?"}, tenant_id="tenant-a")
    assert reply.status == 200, reply.body
    assert reply.body["output"].startswith("[fake model]")
    assert "in_transit" in reply.body["output"]
    assert "delivered" not in reply.body["output"]
    assert fake_model.call_count() == 2  # tool call, then the answer
    tool_turn = fake_model.requests[1].body["messages"]
    assert tool_turn[-1]["role"] == "tool"
    assert '"found": true' in tool_turn[-1]["content"]
    usage = reply.body["usage"]
    assert reply.body["cost_usd"] == expected_cost("gpt-5-mini", usage)

    other = invoke("order_status", {"input": "Where is my order A-1001?"}, tenant_id="tenant-c")
    assert other.status == 200
    assert "in_transit" not in other.body["output"] and "delivered" not in other.body["output"]
    assert '"found": false' in fake_model.requests[-1].body["messages"][-1]["content"]


def test_returns_uses_the_smart_tier(serve_agent: Any, fake_model: FakeModelServer) -> None:
    serve_agent("returns")
    reply = invoke("returns", {"input": {"item": "earrings", "days_since_delivery": 3}})
    assert reply.status == 200, reply.body
    assert reply.body["model"] == "gpt-5"
    assert set(reply.body["output"]) == {"eligible", "reason", "next_steps"}
    assert fake_model.requests[0].model == "gpt-5"
    assert reply.body["cost_usd"] == expected_cost("gpt-5", reply.body["usage"])


def test_cached_tokens_are_priced_at_the_cached_rate(
    serve_agent: Any, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")
    fake_model.script(
        Reply(
            content='{"category": "billing", "confidence": 0.9, "summary": "double charge"}',
            usage={
                "prompt_tokens": 2000,
                "cached_tokens": 1536,
                "completion_tokens": 300,
                "reasoning_tokens": 200,
            },
        )
    )
    reply = invoke("triage", {"input": "I was charged twice"})
    assert reply.status == 200
    assert reply.body["usage"] == {
        "input_tokens": 2000,
        "cached_input_tokens": 1536,
        "output_tokens": 300,
        "reasoning_tokens": 200,
    }
    # gpt-5-mini: (464 * 0.25 + 1536 * 0.025 + 300 * 2.00) / 1e6 = 754.4 / 1e6 USD.
    assert reply.body["cost_usd"] == pytest.approx(0.0007544, abs=1e-12)
    assert Usage(input_tokens=1) + Usage(output_tokens=2) == Usage(input_tokens=1, output_tokens=2)


# --- bad input ------------------------------------------------------------------------


def test_unknown_agent_is_404(serve_agent: Any) -> None:
    serve_agent("triage")
    reply = invoke("nope", {"input": "hi"})
    assert reply.status == 404
    assert reply.body["error"]["code"] == "agent_not_found"
    assert reply.body["error"]["request_id"]


def test_platform_function_answers_agent_not_found(serve_agent: Any) -> None:
    serve_agent("")
    reply = invoke("triage", {"input": "hi"})
    assert reply.status == 404
    assert reply.body["error"]["code"] == "agent_not_found"


def test_unknown_route_is_404(serve_agent: Any) -> None:
    serve_agent("")
    reply = call(api.lambda_handler, api_event(None, path="/v1/nothing", method="GET"))
    assert reply.status == 404
    assert reply.body["error"]["code"] == "not_found"


def test_invalid_json_is_400(serve_agent: Any) -> None:
    serve_agent("triage")
    reply = call(api.lambda_handler, api_event("triage", raw_body='{"input": '))
    assert reply.status == 400
    assert reply.body["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.input"),
        ({"input": 42}, "body.input"),
        ({"input": "x", "extra": 1}, "body.extra"),
        ({"input": "x", "metadata": "not-an-object"}, "body.metadata"),
    ],
)
def test_schema_errors_are_422_with_the_field(serve_agent: Any, body: Any, field: str) -> None:
    serve_agent("triage")
    reply = invoke("triage", body)
    assert reply.status == 422
    assert reply.body["error"]["code"] == "validation_error"
    fields = [f["field"] for f in reply.body["error"]["details"]["fields"]]
    assert any(f.startswith(field) for f in fields), fields


def test_body_over_the_limit_is_413(
    serve_agent: Any, monkeypatch: pytest.MonkeyPatch, fake_model: FakeModelServer
) -> None:
    monkeypatch.setenv("STRATUS_MAX_BODY_BYTES", "1024")
    serve_agent("triage")
    reply = invoke("triage", {"input": "x" * 2000})
    assert reply.status == 413
    assert reply.body["error"]["code"] == "payload_too_large"
    assert fake_model.call_count() == 0


def test_input_over_the_agent_limit_is_413(serve_agent: Any, fake_model: FakeModelServer) -> None:
    serve_agent("triage")  # triage accepts 8,000 characters
    reply = invoke("triage", {"input": "y" * 9000})
    assert reply.status == 413
    assert reply.body["error"]["code"] == "input_too_large"
    assert fake_model.call_count() == 0


def test_missing_tenant_is_401(serve_agent: Any) -> None:
    serve_agent("triage")
    reply = invoke("triage", {"input": "hi"}, tenant_id=None)
    assert reply.status == 401
    assert reply.body["error"]["code"] == "unauthorized"


# --- idempotency ----------------------------------------------------------------------


def test_replayed_idempotency_key_returns_the_stored_response(
    serve_agent: Any, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")
    body = {"input": "Where is my order A-1001?"}
    first = invoke("triage", body, headers={"Idempotency-Key": "k-1"})
    second = invoke("triage", body, headers={"idempotency-key": "k-1"})
    assert first.status == second.status == 200
    assert second.body == first.body
    assert fake_model.call_count() == 1

    reused = invoke("triage", {"input": "something else"}, headers={"Idempotency-Key": "k-1"})
    assert reused.status == 409
    assert reused.body["error"]["code"] == "idempotency_key_reused"
    assert fake_model.call_count() == 1

    # Keys are scoped by tenant: another tenant's identical key is a new request.
    other = invoke("triage", body, headers={"Idempotency-Key": "k-1"}, tenant_id="tenant-b")
    assert other.status == 200
    assert fake_model.call_count() == 2


def test_a_failed_idempotent_call_can_be_retried(
    serve_agent: Any, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_MODEL_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("STRATUS_TIER_FAST_FALLBACKS", "")  # no fallback model to answer
    serve_agent("triage")
    fake_model.inject(Fault(status=500, times=1))
    body = {"input": "I was billed twice"}
    failed = invoke("triage", body, headers={"Idempotency-Key": "k-2"})
    assert failed.status == 502
    retried = invoke("triage", body, headers={"Idempotency-Key": "k-2"})
    assert retried.status == 200
    assert fake_model.call_count() == 2


# --- provider failures ----------------------------------------------------------------


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATUS_MODEL_BACKOFF_BASE_S", "0.01")
    monkeypatch.setenv("STRATUS_MODEL_TIMEOUT_S", "0.5")


def test_transient_errors_are_retried(
    serve_agent: Any, fake_model: FakeModelServer, quick_retries: None
) -> None:
    serve_agent("triage")
    fake_model.inject(Fault(status=503, times=2))
    reply = invoke("triage", {"input": "hello"})
    assert reply.status == 200
    assert fake_model.call_count() == 3


@pytest.mark.parametrize(
    ("fault", "status", "code", "calls"),
    [
        # Issue 6: after the tier's model (3 attempts) its fallback is tried (3 more);
        # when the whole chain fails the answer is a 503 with a code.
        (Fault(status=500, times=-1), 503, "model_unavailable", 6),
        (Fault(status=429, retry_after=0.05, times=-1), 503, "model_rate_limited", 6),
        (Fault(status=200, delay_s=0.8, times=-1), 503, "model_unavailable", 6),
        (Fault(status=401, times=-1), 502, "model_auth_failed", 1),
        (Fault(status=400, times=-1), 502, "model_request_rejected", 1),
    ],
)
def test_provider_down_after_retries_is_a_clear_5xx(
    serve_agent: Any,
    fake_model: FakeModelServer,
    quick_retries: None,
    fault: Fault,
    status: int,
    code: str,
    calls: int,
) -> None:
    serve_agent("triage")
    fake_model.inject(fault)
    reply = invoke("triage", {"input": "hello"})
    assert reply.status == status, reply.body
    assert reply.body["error"]["code"] == code
    assert fake_model.call_count() == calls


def test_rate_limit_passes_retry_after_on(
    serve_agent: Any, fake_model: FakeModelServer, quick_retries: None
) -> None:
    serve_agent("triage")
    fake_model.inject(Fault(status=429, retry_after=0.05, times=-1))
    reply = invoke("triage", {"input": "hello"})
    assert reply.status == 503
    assert reply.headers.get("Retry-After") == "1"


def test_too_little_time_left_is_504_without_a_model_call(
    serve_agent: Any, fake_model: FakeModelServer
) -> None:
    serve_agent("triage")
    event = api_event("triage", body={"input": "hello"})
    reply = call(api.lambda_handler, event, FakeLambdaContext(timeout_s=1.2))
    assert reply.status == 504
    assert reply.body["error"]["code"] == "deadline_exceeded"
    assert fake_model.call_count() == 0


def test_model_timeout_never_exceeds_the_remaining_time(
    serve_agent: Any, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_MODEL_MAX_ATTEMPTS", "1")
    serve_agent("triage")
    # The configured timeout (20 s) waits for a 1.5 s answer...
    fake_model.inject(Fault(status=200, delay_s=1.5, times=1))
    ok = call(api.lambda_handler, api_event("triage", body={"input": "hi"}))
    assert ok.status == 200
    # ...but with 2.7 s left and a 1.5 s margin the call is cut at 1.2 s.
    fake_model.inject(Fault(status=200, delay_s=1.5, times=1))
    cut = call(
        api.lambda_handler,
        api_event("triage", body={"input": "hi"}),
        FakeLambdaContext(timeout_s=2.7),
    )
    assert cut.status == 503
    assert cut.body["error"]["code"] == "model_unavailable"


def test_invalid_structured_output_is_502(serve_agent: Any, fake_model: FakeModelServer) -> None:
    serve_agent("triage")
    fake_model.script(Reply(content="this is not json"))
    reply = invoke("triage", {"input": "hello"})
    assert reply.status == 502
    assert reply.body["error"]["code"] == "model_output_invalid"


def test_tool_loop_is_bounded(serve_agent: Any, fake_model: FakeModelServer) -> None:
    serve_agent("order_status")  # max_iterations = 4
    loop = Reply(tool_calls=[{"name": "lookup_order", "arguments": {"order_id": "A-1"}}])
    fake_model.script(*([loop] * 6))
    reply = invoke("order_status", {"input": "Where is A-1?"})
    assert reply.status == 502
    assert reply.body["error"]["code"] == "max_iterations_exceeded"
    assert fake_model.call_count() == 4
    # On its last allowed call the model was told to answer instead of calling tools.
    assert fake_model.requests[-1].body.get("tool_choice") == "none"


def test_an_unpriced_model_fails_before_spending(
    serve_agent: Any, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_TIER_FAST", "mystery-model")
    serve_agent("triage")
    reply = invoke("triage", {"input": "hello"})
    assert reply.status == 500
    assert reply.body["error"]["code"] == "configuration_error"
    assert fake_model.call_count() == 0

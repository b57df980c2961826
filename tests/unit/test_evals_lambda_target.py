"""``LambdaVersionTarget``: what it sends to Lambda ``Invoke`` and how it reads the answer.

A real boto3 Lambda client with botocore's ``Stubber``: the request must name the
function and ``Qualifier`` (the version under test) and carry an API Gateway proxy
event the API handler accepts (the authorizer context names the tenant).
"""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from functions.handlers import common
from stratus.evals.api_target import ApiError
from stratus.evals.lambda_target import InvokeFailed, LambdaVersionTarget, proxy_event
from stratus.evals.models import parse_suite


def _payload(value: Any) -> StreamingBody:
    raw = json.dumps(value).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def _response(status: int, body: Any) -> dict[str, Any]:
    return {
        "StatusCode": 200,
        "Payload": _payload({"statusCode": status, "body": json.dumps(body), "headers": {}}),
    }


ANSWER = {
    "output": {"category": "order_status", "confidence": 0.9, "summary": "s"},
    "model": "gpt-5-mini",
    "agent": {"name": "triage", "version": "1.7.0"},
    "cost_usd": "0.00042",
    "usage": {"input_tokens": 120, "output_tokens": 30},
    "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A-1001"}}],
}


@pytest.fixture
def client() -> Any:
    return boto3.client(
        "lambda",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_an_invoke_case_calls_the_version_with_a_proxy_event(client: Any) -> None:
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.lambda.Invoke",
        lambda params, **_: sent.append(json.loads(params["Payload"])),
    )
    target = LambdaVersionTarget(client, {"triage": "fn-triage"}, "7", {}, tenant_id="t-1")
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            _response(200, ANSWER),
            {
                "FunctionName": "fn-triage",
                "Qualifier": "7",
                "InvocationType": "RequestResponse",
                "Payload": ANY,
            },
        )
        seen = target.run("triage", "Where is A-1001?")
    assert seen.output == ANSWER["output"]
    assert (seen.cost_usd, seen.input_tokens, seen.output_tokens) == (0.00042, 120, 30)
    assert [c.name for c in seen.tool_calls] == ["lookup_order"]
    assert seen.tool_calls_unobservable is None
    assert (target.release("triage"), target.model("triage")) == ("1.7.0", "gpt-5-mini")
    (event,) = sent
    assert (event["httpMethod"], event["path"]) == ("POST", "/v1/agents/triage/invoke")
    assert json.loads(event["body"]) == {"input": "Where is A-1001?"}
    # The handler's own reading of the event: the tenant the authorizer would have named.
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

    assert common.tenant_id(APIGatewayProxyEvent(event)) == "t-1"
    assert common.scopes(APIGatewayProxyEvent(event)) >= {"invoke", "sessions"}


def test_errors_are_the_apis_error_codes_or_the_function_error(client: Any) -> None:
    target = LambdaVersionTarget(client, {"triage": "fn"}, "3", {}, tenant_id="t")
    with Stubber(client) as stub:
        stub.add_response(
            "invoke", _response(413, {"error": {"code": "input_too_large", "message": "big"}})
        )
        stub.add_response(
            "invoke",
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": _payload({"errorMessage": "boom", "errorType": "RuntimeError"}),
            },
        )
        with pytest.raises(ApiError) as api_error:
            target.run("triage", "x")
        assert (api_error.value.status, api_error.value.code) == (413, "input_too_large")
        with pytest.raises(InvokeFailed, match="fn:3 failed: boom"):
            target.run("triage", "x")


def test_an_answer_without_tool_calls_makes_tool_assertions_unobservable(client: Any) -> None:
    target = LambdaVersionTarget(client, {"triage": "fn"}, "3", {}, tenant_id="t")
    older = {k: v for k, v in ANSWER.items() if k != "tool_calls"}
    with Stubber(client) as stub:
        stub.add_response("invoke", _response(200, older))
        seen = target.run("triage", "x")
    assert seen.tool_calls_unobservable == "this function version does not return its tool calls"


def test_a_list_of_turns_is_one_session_over_the_proxy_routes(client: Any) -> None:
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.lambda.Invoke",
        lambda params, **_: sent.append(json.loads(params["Payload"])),
    )
    target = LambdaVersionTarget(client, {"support": "fn"}, "2", {}, tenant_id="t")
    reply = {"reply": "ok", "cost_usd": "0.001", "usage": {"input_tokens": 5, "output_tokens": 2}}
    with Stubber(client) as stub:
        stub.add_response("invoke", _response(201, {"session_id": "s-1"}))
        stub.add_response("invoke", _response(200, {**reply, "tool_calls": []}))
        stub.add_response("invoke", _response(200, {**reply, "reply": "done", "tool_calls": []}))
        stub.add_response(
            "invoke", {"StatusCode": 200, "Payload": _payload({"statusCode": 204, "body": ""})}
        )
        seen = target.run("support", ["a", "b"])
    assert seen.turns == ["ok", "done"] and seen.cost_usd == pytest.approx(0.002)
    assert [(e["httpMethod"], e["path"]) for e in sent] == [
        ("POST", "/v1/agents/support/sessions"),
        ("POST", "/v1/agents/support/sessions/s-1/messages"),
        ("POST", "/v1/agents/support/sessions/s-1/messages"),
        ("DELETE", "/v1/agents/support/sessions/s-1"),
    ]
    assert sent[1]["resource"] == "/v1/agents/support/{proxy+}"
    assert sent[1]["pathParameters"] == {"proxy": "sessions/s-1/messages"}


def test_a_job_case_is_refused_on_a_function_version(client: Any) -> None:
    suite = parse_suite(
        {
            "agent": "triage",
            "cases": [
                {
                    "id": "job",
                    "kind": "job",
                    "input": "x",
                    "assertions": [{"type": "cost_at_most", "usd": 1}],
                }
            ],
        },
        "inline",
    )
    target = LambdaVersionTarget(client, {"triage": "fn"}, "1", {}, tenant_id="t")
    with pytest.raises(Exception, match="a job case cannot run against one function version"):
        target.run_case("triage", suite.cases[0])


def test_proxy_event_has_the_gateway_shape() -> None:
    event = proxy_event(
        "POST",
        "/v1/agents/triage/invoke",
        resource="/v1/agents/triage/invoke",
        path_parameters=None,
        body={"input": "x"},
        tenant_id="t",
    )
    assert event["requestContext"]["authorizer"]["tenant_id"] == "t"
    assert event["requestContext"]["requestId"].startswith("eval-")
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["isBase64Encoded"] is False and event["pathParameters"] is None

"""Every edge of a request answered with a 4xx in the error shape, never a 500.

The real API handler in-process against moto: bodies that are not UTF-8, not
JSON or nested too deep; query and path parameters with odd characters and huge
numbers. Each case names the code the README documents for it.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from functions.handlers import api
from stratus.contracts import MAX_JSON_DEPTH, json_too_deep
from tests.support import ApiReply, FakeLambdaContext, api_event, call

#: (agent served, method, path) of every route that takes a JSON body.
BODY_ROUTES = [
    ("", "POST", "/v1/jobs"),
    ("", "POST", "/v1/jobs/job-1/approval"),
    ("triage", "POST", "/v1/agents/triage/invoke"),
    ("support", "POST", "/v1/agents/support/sessions"),
    ("support", "POST", "/v1/agents/support/sessions/s-1/messages"),
]


def send(
    serve_agent: Any,
    agent: str,
    method: str,
    path: str,
    raw: bytes | None = None,
    query: dict[str, str] | None = None,
) -> ApiReply:
    serve_agent(agent)
    event = api_event(None, path=path, method=method)
    event["body"] = None
    if raw is not None:
        try:
            event["body"], event["isBase64Encoded"] = raw.decode("utf-8"), False
        except UnicodeDecodeError:  # API Gateway base64-encodes what is not text
            event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
    if query is not None:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    return call(api.lambda_handler, event)


def assert_error(reply: ApiReply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert set(reply.body) == {"error"}
    assert reply.body["error"]["code"] == code
    assert reply.body["error"]["message"]
    assert reply.body["error"]["request_id"]


# --- bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(("agent", "method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "raw",
    [
        b'{"agent": "triage", "input": "\xff\xfe"}',  # not UTF-8
        b"\xc3\x28{}",  # an invalid two-byte sequence
        b'{"agent": ',  # truncated
        b"not json at all",
        b"{'single': 'quotes'}",
    ],
    ids=["invalid-utf8-in-string", "invalid-utf8-lead", "truncated", "text", "quotes"],
)
def test_a_body_that_is_not_json_is_400_invalid_json(
    serve_agent: Any, agent: str, method: str, path: str, raw: bytes
) -> None:
    assert_error(send(serve_agent, agent, method, path, raw), 400, "invalid_json")


@pytest.mark.parametrize(("agent", "method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 1000 + b"]" * 1000,
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b'{"input": ' + b"[" * 100_000,  # unterminated too: never parsed
    ],
    ids=["arrays", "objects", "unterminated"],
)
def test_json_nested_too_deep_is_400_invalid_json(
    serve_agent: Any, agent: str, method: str, path: str, raw: bytes
) -> None:
    reply = send(serve_agent, agent, method, path, raw)
    assert_error(reply, 400, "invalid_json")
    assert "nest" in reply.body["error"]["message"]


def test_nesting_within_the_limit_is_validated_normally(serve_agent: Any) -> None:
    inner = b'{"k": ' * (MAX_JSON_DEPTH - 2) + b"1" + b"}" * (MAX_JSON_DEPTH - 2)
    raw = b'{"input": ' + inner + b', "extra": 1}'
    reply = send(serve_agent, "triage", "POST", "/v1/agents/triage/invoke", raw)
    assert_error(reply, 422, "validation_error")  # well-formed JSON, wrong schema


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ("[]", False),
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
        ('"' + "[" * 500 + '"', False),  # brackets inside a string do not nest
        ('["\\"' + "[" * 500 + '"]', False),  # nor after an escaped quote
        ('{"a": "\\\\"}' + "[" * 100, True),  # an escaped backslash ends the string
        ('"unterminated ' + "\\" * 3, False),
    ],
)
def test_json_depth_scan(text: str, deep: bool) -> None:
    assert json_too_deep(text) is deep


def test_json_depth_scan_is_linear_on_many_escaped_quotes() -> None:
    text = '"' + '\\"' * 200_000  # quadratic for a naive regex over every quote
    assert json_too_deep(text) is False


# --- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor", ["²", "١٢", "٣", "-1", "abc", "1.5", " 1", "99999999999", "0x10", "1e3"]
)
def test_every_bad_history_cursor_is_422(serve_agent: Any, cursor: str) -> None:
    reply = send(
        serve_agent, "support", "GET", "/v1/agents/support/sessions/s-1", query={"cursor": cursor}
    )
    if reply.status == 404:  # a cursor that is plain ASCII digits reaches the lookup
        assert cursor.isascii() and cursor.isdecimal()
        assert_error(reply, 404, "session_not_found")
    else:
        assert_error(reply, 422, "validation_error")


@pytest.mark.parametrize("limit", ["²", "0", "-1", "201", "1" * 40, "1e3", "", "nan"])
def test_every_bad_history_limit_is_422(serve_agent: Any, limit: str) -> None:
    reply = send(
        serve_agent, "support", "GET", "/v1/agents/support/sessions/s-1", query={"limit": limit}
    )
    assert_error(reply, 422, "validation_error")


@pytest.mark.parametrize("period", ["week", "", "DAY", "²", "day\x00"])
def test_a_bad_usage_period_is_422(serve_agent: Any, period: str) -> None:
    assert_error(
        send(serve_agent, "", "GET", "/v1/usage", query={"period": period}), 422, "validation_error"
    )


@pytest.mark.parametrize(
    "session_id", ["%00", "a" * 65, "..", "é", "²", "a b", "a%2Fb", "\u202e", "x" * 2000]
)
def test_odd_session_ids_are_404(serve_agent: Any, session_id: str) -> None:
    for method, suffix, raw in (
        ("GET", "", None),
        ("DELETE", "", None),
        ("POST", "/messages", b'{"message": "hi"}'),
    ):
        path = f"/v1/agents/support/sessions/{session_id}{suffix}"
        reply = send(serve_agent, "support", method, path, raw)
        assert reply.status == 404, reply.body
        # not_found: a character the router's path parameter pattern does not take
        assert reply.body["error"]["code"] in {"session_not_found", "not_found"}


@pytest.mark.parametrize("job_id", ["%00", "a" * 65, "é", "²", "a b", "\u202e", "x" * 2000])
def test_odd_job_ids_are_4xx(serve_agent: Any, job_id: str) -> None:
    for method, suffix, raw in (
        ("GET", "", None),
        ("POST", "/cancel", None),
        ("POST", "/approval", b'{"approved": true}'),
    ):
        reply = send(serve_agent, "", method, f"/v1/jobs/{job_id}{suffix}", raw)
        assert 400 <= reply.status < 500, reply.body
        assert reply.body["error"]["code"] in {"validation_error", "job_not_found", "not_found"}


@pytest.mark.parametrize("agent", ["é", "²", "a" * 300, "%00", "nope"])
def test_odd_agent_names_are_404_agent_not_found(serve_agent: Any, agent: str) -> None:
    reply = send(serve_agent, "", "POST", f"/v1/agents/{agent}/invoke", b'{"input": "hi"}')
    assert_error(reply, 404, "agent_not_found")


@pytest.mark.parametrize("key", ["x" * 257, "\u202e", "é"], ids=["too-long", "bidi", "non-ascii"])
def test_an_odd_idempotency_key_is_not_a_500(serve_agent: Any, key: str) -> None:
    serve_agent("")
    event = api_event(None, path="/v1/jobs", method="POST", headers={"Idempotency-Key": key})
    event["body"] = '{"agent": "nope", "input": "hi"}'
    reply = call(api.lambda_handler, event)
    assert 400 <= reply.status < 500, reply.body


@pytest.mark.parametrize(("agent", "method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_declared_json_is_415(
    serve_agent: Any, agent: str, method: str, path: str, content_type: str
) -> None:
    serve_agent(agent)
    event = api_event(None, path=path, method=method, headers={"Content-Type": content_type})
    event["body"] = '{"agent": "triage", "input": "hi", "approved": true, "message": "hi"}'
    assert_error(call(api.lambda_handler, event), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON"]
)
def test_json_content_types_are_accepted(serve_agent: Any, content_type: str) -> None:
    serve_agent("")
    event = api_event(None, path="/v1/jobs", method="POST", headers={"Content-Type": content_type})
    event["body"] = '{"agent": "nope", "input": "hi"}'
    reply = call(api.lambda_handler, event)
    assert reply.status != 415 and reply.status < 500, reply.body


def test_a_deleted_session_answers_204_with_no_body_and_no_content_type(
    serve_agent: Any,
) -> None:
    created = send(serve_agent, "support", "POST", "/v1/agents/support/sessions", b"{}")
    assert created.status == 201, created.body
    path = f"/v1/agents/support/sessions/{created.body['session_id']}"
    serve_agent("support")
    event = api_event(None, path=path, method="DELETE")
    event["body"] = None
    raw = api.lambda_handler(event, FakeLambdaContext())
    assert raw["statusCode"] == 204, raw
    assert not raw.get("body")
    headers = {k.lower() for k in (raw.get("headers") or {})}
    headers |= {k.lower() for k in (raw.get("multiValueHeaders") or {})}
    assert "content-type" not in headers  # an empty body declared JSON does not parse


@pytest.mark.parametrize(
    "cap",
    [
        5e-324,  # found by the fuzzer: below DynamoDB's smallest number, it was a 500
        1e-7,
        0,
        True,  # JSON booleans are not amounts
        "0.5",
        10_001,
    ],
)
def test_an_unusable_job_cost_cap_is_422_before_anything_is_written(
    serve_agent: Any, cap: Any
) -> None:
    import json

    body = json.dumps({"agent": "triage", "input": "hi", "max_cost_usd": cap}).encode()
    assert_error(send(serve_agent, "", "POST", "/v1/jobs", body), 422, "validation_error")

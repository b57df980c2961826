"""The WebSocket protocol (issue 17) on in-memory fakes: frame validation -> error codes,
claims by client id, Gone handling, and the samples against the schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from stratus.audit import AuditTrail, MemoryAuditStore
from stratus.errors import StratusError
from stratus.stream_events import streaming_turn, tool_status, turn_events
from stratus.streaming import (
    MAX_FRAME_BYTES,
    MemoryInvoker,
    MemoryPoster,
    MemoryStreamStore,
    StreamCaller,
    StreamedExecution,
    StreamRequest,
    StreamRouter,
    StreamTickets,
    frame_key,
)
from stratus.streaming.execution import FrameSink
from tests.stream_samples import check_websocket_sample
from tests.support import load_event

CONN = "conn-1"
FULL = {"tenant_id": "tenant-a", "key_id": "key_1", "scopes": "invoke sessions"}


class Clock:
    def __init__(self, now: float = 1_764_614_400.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def router(
    *, functions: dict[str, str] | None = None, clock: Clock | None = None
) -> tuple[StreamRouter, MemoryStreamStore, MemoryPoster, MemoryInvoker, AuditTrail]:
    store, poster, invoker = MemoryStreamStore(), MemoryPoster(), MemoryInvoker()
    audit = AuditTrail(MemoryAuditStore())
    r = StreamRouter(
        store,
        poster,
        invoker,
        functions=functions or {"triage": "stratus-triage:live", "support": "stratus-support"},
        audit=audit,
        clock=clock or Clock(),
    )
    return r, store, poster, invoker, audit


def frame_event(
    body: Any, *, route: str = "$default", authorizer: dict[str, Any] | None = None, rid: str = "r1"
) -> dict[str, Any]:
    return {
        "requestContext": {
            "routeKey": route,
            "eventType": "MESSAGE",
            "connectionId": CONN,
            "requestId": rid,
            "authorizer": FULL if authorizer is None else authorizer,
        },
        "body": body if isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }


INVOKE = {"action": "invoke", "id": "c1", "agent": "triage", "input": "hello"}


def only_error(poster: MemoryPoster) -> dict[str, Any]:
    (frame,) = poster.frames[CONN]
    assert frame["type"] == "error", frame
    return frame


@pytest.mark.parametrize(
    ("body", "code", "client_id"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "validation_error", None),
        ({"id": "c1", "agent": "triage", "input": "x"}, "validation_error", "c1"),
        ({"action": "dance", "id": "c1"}, "not_found", "c1"),
        ({"action": "invoke", "id": "c1", "agent": "triage"}, "validation_error", "c1"),
        ({"action": "invoke", "agent": "triage", "input": "x"}, "validation_error", None),
        ({**INVOKE, "extra": 1}, "validation_error", "c1"),
        ({**INVOKE, "id": "has space"}, "validation_error", "has space"),  # echoed as sent
        (
            {"action": "message", "id": "c1", "agent": "support", "message": "hi"},
            "validation_error",
            "c1",
        ),
        (
            {
                "action": "message",
                "id": "c1",
                "agent": "support",
                "session_id": "../x",
                "message": "hi",
            },
            "validation_error",
            "c1",
        ),
        ({**INVOKE, "agent": "nobody"}, "agent_not_found", "c1"),
        ("[" * 100 + "]" * 100, "invalid_json", None),
    ],
)
def test_bad_frames_get_an_error_frame_with_the_rest_code(
    body: Any, code: str, client_id: str | None
) -> None:
    r, store, poster, invoker, _ = router()
    assert r.handle(frame_event(body)) == 200  # the connection stays open
    frame = only_error(poster)
    assert frame["error"]["code"] == code
    assert frame["id"] == client_id
    assert frame["error"]["message"]
    assert invoker.calls == [] and not any(k.startswith("FRAME#") for k in store.items)
    if code == "validation_error":
        assert frame["error"]["details"]["fields"]


def test_a_frame_over_32_kib_is_payload_too_large() -> None:
    r, _, poster, invoker, _ = router()
    big = {**INVOKE, "input": "x" * MAX_FRAME_BYTES}
    r.handle(frame_event(big))
    frame = only_error(poster)
    assert frame["error"]["code"] == "payload_too_large"
    assert frame["error"]["details"] == {"limit": MAX_FRAME_BYTES}
    assert invoker.calls == []


def test_a_frame_that_is_not_utf8_is_invalid_json() -> None:
    import base64

    r, _, poster, _, _ = router()
    event = frame_event("")
    event["body"], event["isBase64Encoded"] = base64.b64encode(b"\xff\xfe").decode(), True
    r.handle(event)
    assert only_error(poster)["error"]["code"] == "invalid_json"


def test_the_connection_stays_usable_after_bad_frames() -> None:
    r, _, poster, invoker, _ = router()
    r.handle(frame_event("{nope"))
    r.handle(frame_event({"action": "dance"}))
    r.handle(frame_event(INVOKE, route="invoke"))
    assert [f["error"]["code"] for f in poster.frames[CONN]] == ["invalid_json", "not_found"]
    assert len(invoker.calls) == 1


@pytest.mark.parametrize(
    ("frame", "scopes", "missing"),
    [
        (INVOKE, "sessions", "invoke"),
        (
            {
                "action": "message",
                "id": "c2",
                "agent": "support",
                "session_id": "s1",
                "message": "hi",
            },
            "invoke",
            "sessions",
        ),
    ],
)
def test_a_frame_without_the_scope_is_forbidden_and_audited(
    frame: dict[str, Any], scopes: str, missing: str
) -> None:
    r, _, poster, invoker, audit = router()
    r.handle(frame_event(frame, authorizer={**FULL, "scopes": scopes}))
    error = only_error(poster)
    assert error["error"]["code"] == "forbidden"
    assert error["error"]["details"] == {"missing_scope": missing}
    assert invoker.calls == []
    audit.flush()
    assert audit.store is not None
    (event,), _ = audit.store.events("tenant-a")
    assert event.type == "request.refused"
    assert event.details["missing_scope"] == missing


def test_a_message_to_an_agent_without_sessions_is_not_streamable() -> None:
    r, _, poster, invoker, _ = router()
    frame = {"action": "message", "id": "c3", "agent": "triage", "session_id": "s1", "message": "x"}
    r.handle(frame_event(frame), has_sessions=lambda agent: agent == "support")
    assert only_error(poster)["error"]["code"] == "not_streamable"
    assert invoker.calls == []


def test_an_invoke_is_claimed_and_handed_to_the_agent_function() -> None:
    r, store, poster, invoker, _ = router()
    r.handle(frame_event(INVOKE, route="invoke", rid="req-9"))
    assert poster.frames == {}
    ((function, event),) = invoker.calls
    assert function == "stratus-triage:live"
    assert event == {
        "stratus_stream": {
            "connection_id": CONN,
            "id": "c1",
            "action": "invoke",
            "agent": "triage",
            "input": "hello",
            "caller": {
                "tenant_id": "tenant-a",
                "key_id": "key_1",
                "scopes": "invoke sessions",
                "role": "",
                "customer_id": "",
                "tier": "standard",
            },
            "request_id": "req-9",
        }
    }
    assert store.items[frame_key("tenant-a", "triage", "c1")]["status"] == "running"


def test_a_resend_while_running_is_request_in_progress_and_never_runs_twice() -> None:
    r, _, poster, invoker, _ = router()
    r.handle(frame_event(INVOKE, route="invoke"))
    r.handle(frame_event(INVOKE, route="invoke"))
    assert len(invoker.calls) == 1
    error = only_error(poster)
    assert error["error"]["code"] == "request_in_progress"
    assert error["id"] == "c1"


def test_a_resend_after_it_finished_gets_the_stored_done_frame() -> None:
    r, store, poster, invoker, _ = router()
    r.handle(frame_event(INVOKE, route="invoke"))
    done = {"type": "done", "id": "c1", "output": "hi", "usage": {}, "cost_usd": 0.1}
    store.finish(frame_key("tenant-a", "triage", "c1"), done, Clock()())
    # A new connection (a reconnect) resends the frame: the stored answer, no second run.
    event = frame_event(INVOKE, route="invoke")
    event["requestContext"]["connectionId"] = "conn-2"
    r.handle(event)
    assert poster.frames["conn-2"] == [done]
    assert len(invoker.calls) == 1


def test_client_ids_are_per_tenant() -> None:
    r, _, _, invoker, _ = router()
    r.handle(frame_event(INVOKE, route="invoke"))
    r.handle(frame_event(INVOKE, route="invoke", authorizer={**FULL, "tenant_id": "tenant-b"}))
    assert len(invoker.calls) == 2


def test_a_claim_whose_run_died_is_taken_over_after_its_lease() -> None:
    clock = Clock()
    r, _, poster, invoker, _ = router(clock=clock)
    r.handle(frame_event(INVOKE, route="invoke"))
    clock.now += 961  # the agent function's longest run, plus the margin
    r.handle(frame_event(INVOKE, route="invoke"))
    assert len(invoker.calls) == 2 and poster.frames == {}


def test_an_agent_function_that_cannot_be_invoked_gives_the_claim_back() -> None:
    r, store, poster, invoker, _ = router()
    invoker.fail = True
    r.handle(frame_event(INVOKE, route="invoke"))
    assert only_error(poster)["error"]["code"] == "agent_unavailable"
    assert frame_key("tenant-a", "triage", "c1") not in store.items
    invoker.fail = False
    r.handle(frame_event(INVOKE, route="invoke"))
    assert len(invoker.calls) == 1


def test_connect_and_disconnect_record_the_connection() -> None:
    r, store, _, _, _ = router()
    event = frame_event("", route="$connect")
    assert r.handle(event) == 200
    assert store.get_connection(CONN) == StreamCaller("tenant-a", "key_1", ("invoke", "sessions"))
    assert store.items[f"CONN#{CONN}"]["expires_at"] == int(Clock()()) + 2 * 3600
    r.handle(frame_event("", route="$disconnect"))
    assert store.get_connection(CONN) is None
    assert r.handle(frame_event("", route="$connect", authorizer={})) == 401


def test_a_frame_without_authorizer_context_uses_the_connection_record() -> None:
    r, store, _, invoker, _ = router()
    store.put_connection(CONN, StreamCaller("tenant-c", "key_c", ("invoke",)), Clock()())
    r.handle(frame_event(INVOKE, route="invoke", authorizer={}))
    assert invoker.calls[0][1]["stratus_stream"]["caller"]["tenant_id"] == "tenant-c"


# -- the agent side: frames, Gone, the final frame ---------------------------------------


def request(**overrides: Any) -> StreamRequest:
    return StreamRequest(
        connection_id=CONN,
        id="c1",
        action="invoke",
        agent="triage",
        input="hi",
        caller=FULL,
        request_id="r1",
        **overrides,
    )


def test_a_streamed_run_posts_its_frames_and_stores_the_done_frame() -> None:
    store, poster = MemoryStreamStore(), MemoryPoster()
    execution = StreamedExecution(store, poster, clock=Clock())

    def work(on_event: Any) -> dict[str, Any]:
        on_event({"type": "delta", "text": "Hel"})
        on_event({"type": "delta", "text": "lo"})
        return {"output": "Hello", "cost_usd": 0.5}

    execution.run(request(), work)
    frames = poster.frames[CONN]
    assert frames == [
        {"type": "delta", "text": "Hel", "id": "c1"},
        {"type": "delta", "text": "lo", "id": "c1"},
        {"type": "done", "id": "c1", "output": "Hello", "cost_usd": 0.5},
    ]
    stored = store.items[frame_key("tenant-a", "triage", "c1")]
    assert stored["status"] == "done" and stored["frame"] == frames[-1]


def test_a_gone_connection_stops_the_posting_not_the_run() -> None:
    store, poster = MemoryStreamStore(), MemoryPoster(gone_after={CONN: 1})
    execution = StreamedExecution(store, poster, clock=Clock())
    ran: list[str] = []

    def work(on_event: Any) -> dict[str, Any]:
        for text in ("a", "b", "c"):
            on_event({"type": "delta", "text": text})
            ran.append(text)
        return {"output": "abc"}

    sink = execution.run(request(), work)
    assert ran == ["a", "b", "c"]  # the run went on to its end
    assert poster.frames[CONN] == [{"type": "delta", "text": "a", "id": "c1"}]
    assert sink.gone and sink.posted == 1 and sink.skipped == 3
    assert poster.attempts == 2  # one failed post, then no more posting
    assert store.items[frame_key("tenant-a", "triage", "c1")]["frame"]["output"] == "abc"


def test_a_failed_run_ends_with_an_error_frame_with_its_code() -> None:
    store, poster = MemoryStreamStore(), MemoryPoster()
    execution = StreamedExecution(store, poster, clock=Clock())

    class Busy(StratusError):
        code = "session_busy"
        status = 409

    def work(on_event: Any) -> dict[str, Any]:
        raise Busy("a turn is running", details={"policy": "reject"})

    execution.run(request(), work)
    assert poster.frames[CONN] == [
        {
            "type": "error",
            "id": "c1",
            "error": {
                "code": "session_busy",
                "message": "a turn is running",
                "details": {"policy": "reject"},
            },
        }
    ]


def test_a_post_that_fails_otherwise_loses_one_frame_not_the_run() -> None:
    class Flaky(MemoryPoster):
        def post(self, connection_id: str, frame: dict[str, Any]) -> None:
            if frame.get("text") == "b":
                raise RuntimeError("throttled")
            super().post(connection_id, frame)

    sink = FrameSink(Flaky(), CONN, "c1")
    for text in ("a", "b", "c"):
        sink.event({"type": "delta", "text": text})
    assert not sink.gone and sink.posted == 2 and sink.skipped == 1


# -- tickets -------------------------------------------------------------------------------


def test_a_ticket_is_single_use_and_lasts_60_seconds() -> None:
    clock = Clock()
    tickets = StreamTickets(MemoryStreamStore(), clock=clock)
    caller = StreamCaller("tenant-a", "key_1", ("invoke",), role="agent", customer_id="cust-1")
    ticket, expires_at = tickets.issue(caller)
    assert ticket.startswith("stk_") and expires_at.endswith("Z")
    assert tickets.consume(ticket) == caller
    assert tickets.consume(ticket) is None  # single use
    late, _ = tickets.issue(caller)
    clock.now += 60
    assert tickets.consume(late) is None  # expired
    assert tickets.consume("stk_unknown") is None
    assert tickets.consume("not-a-ticket") is None


# -- runner events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (None, "started"),
        ('{"status": "in_transit"}', "ok"),
        ('{"error": "tool_not_permitted", "message": "no"}', "denied"),
        ('{"error": "tool_failed", "message": "x failed"}', "error"),
        ('{"error": "invalid_arguments", "details": []}', "error"),
        ('{"error": "a field of a real result", "order": 1}', "ok"),
        ("not json", "ok"),
    ],
)
def test_tool_status(result: str | None, status: str) -> None:
    assert tool_status(result) == status


def test_only_the_streaming_requests_session_turn_streams() -> None:
    events: list[dict[str, Any]] = []
    assert turn_events("r1") == {}
    with streaming_turn("r1", events.append):
        assert turn_events("r1") == {"on_event": events.append}
        assert turn_events("r-queued-before") == {}
    assert turn_events("r1") == {}


# -- samples and schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "websocket/schema.json",
        "websocket/connect.json",
        "websocket/message_event.json",
        "websocket/invoke_frame.json",
        "websocket/message_frame.json",
        "websocket/delta_frame.json",
        "websocket/tool_frame.json",
        "websocket/done_frame.json",
        "websocket/error_frame.json",
    ],
)
def test_the_websocket_samples_are_valid(name: str) -> None:
    check_websocket_sample(name, load_event(name))


def test_the_sample_client_frames_pass_the_router() -> None:
    r, _, poster, invoker, _ = router()
    for name in ("websocket/invoke_frame.json", "websocket/message_frame.json"):
        r.handle(frame_event(load_event(name)))
    assert poster.frames == {} and len(invoker.calls) == 2


def test_the_sample_message_event_is_routed() -> None:
    r, _, poster, invoker, _ = router()
    assert r.handle(load_event("websocket/message_event.json")) == 200
    assert poster.frames == {} and len(invoker.calls) == 1


def test_a_schema_invalid_frame_is_refused_by_the_schema_too() -> None:
    schema = load_event("websocket/schema.json")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"action": "invoke", "id": "x", "agent": "triage"}, schema)

"""Sessions: the real handler and service against moto, the real openai client to the fake model.

API semantics go through ``functions.handlers.api.lambda_handler``. The
concurrency tests run one ``SessionService`` per thread, each standing for a
separate Lambda instance: a Lambda process serves one request at a time, and
Powertools keeps the current event on the module-level resolver, so threads
must not share the handler. moto's DynamoDB is made request-atomic (as DynamoDB
is) by ``infra.local.moto_atomic``; see that module for why moto needs it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from functions.agents import load_agent
from functions.handlers import api
from infra.local import moto_atomic
from infra.local.fake_model import FakeModelServer, Fault
from stratus import composition
from stratus.agents import AgentSpec
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.errors import SessionBusy, StratusError
from stratus.sessions import COUNTER_SK, HEAD_SK, SessionService, StoredMessage, queue_sk
from stratus.tokens import message_tokens
from tests.support import api_event, call, load_event

AGENT = "support"
BASE = f"/v1/agents/{AGENT}/sessions"


@pytest.fixture(autouse=True)
def atomic_moto() -> Iterator[None]:
    moto_atomic.install()
    yield
    moto_atomic.uninstall()


@pytest.fixture
def support(serve_agent: Any, cloud: dict[str, Any]) -> dict[str, Any]:
    serve_agent(AGENT)
    return cloud


def request(
    method: str,
    path: str,
    body: Any = None,
    *,
    tenant: str | None = "tenant-a",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> Any:
    event = api_event(None, path=path, method=method, body=body, tenant_id=tenant, headers=headers)
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    return call(api.lambda_handler, event)


def create(tenant: str = "tenant-a", metadata: dict[str, Any] | None = None) -> str:
    reply = request("POST", BASE, {"metadata": metadata or {}}, tenant=tenant)
    assert reply.status == 201, reply.body
    return str(reply.body["session_id"])


def send(sid: str, message: str, **kwargs: Any) -> Any:
    return request("POST", f"{BASE}/{sid}/messages", {"message": message}, **kwargs)


def table(cloud: dict[str, Any]) -> Any:
    return boto3.resource("dynamodb").Table(cloud["tables"]["sessions"])


def pk(sid: str, tenant: str = "tenant-a", agent: str = AGENT) -> str:
    return f"{tenant}#{agent}#{sid}"


def stored_messages(cloud: dict[str, Any], sid: str, tenant: str = "tenant-a") -> list[Any]:
    items: list[Any] = []
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": "sid = :p AND begins_with(sk, :m)",
        "ExpressionAttributeValues": {":p": pk(sid, tenant), ":m": "M#"},
    }
    while True:
        page = table(cloud).query(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def with_sessions(**changes: Any) -> AgentSpec:
    spec = load_agent(AGENT)
    assert spec.sessions is not None
    return spec.model_copy(update={"sessions": spec.sessions.model_copy(update=changes)})


def service(spec: AgentSpec | None = None, runtime: Runtime | None = None) -> SessionService:
    """The service of a separate process (its own runtime) unless ``runtime`` is given."""
    return (runtime or Runtime(Settings())).session_service(spec or load_agent(AGENT))


def assert_history_is_whole(messages: list[Any], turns: int) -> None:
    """Indices 1..2n without gaps or duplicates, each turn a user message then its reply."""
    assert [int(m["index"]) for m in messages] == list(range(1, 2 * turns + 1))
    for number in range(1, turns + 1):
        user, assistant = messages[2 * number - 2], messages[2 * number - 1]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert int(user["turn"]) == int(assistant["turn"]) == number
        # The fake model echoes the question: the reply belongs to this very message.
        assert str(user["content"])[:60] in str(assistant["content"])


# --- the API --------------------------------------------------------------------------


def test_session_lifecycle(support: dict[str, Any], fake_model: FakeModelServer) -> None:
    boto3.resource("dynamodb").Table(support["tables"]["orders"]).put_item(
        Item={"tenant_id": "tenant-a", "order_id": "A-1001", "status": "in_transit"}
    )
    created = request("POST", BASE, {"metadata": {"channel": "chat"}})
    assert created.status == 201
    assert set(created.body) == {"session_id", "expires_at"}
    sid = created.body["session_id"]

    first = send(sid, "Where is my order A-1001?")
    assert first.status == 200, first.body
    assert set(first.body) == {
        "reply",
        "turn",
        "usage",
        "cost_usd",
        "session_cost_usd",
        "tool_calls",
        "request_id",
        "release",
        "prompt_version",
    }
    assert first.body["release"].startswith("r-") and first.body["prompt_version"] == "v1"
    assert first.body["turn"] == 1
    assert "in_transit" in first.body["reply"]  # the order_status tool, in the caller's tenant
    assert first.body["cost_usd"] > 0
    assert first.body["session_cost_usd"] == first.body["cost_usd"]

    second = send(sid, "When will it arrive?")
    assert second.status == 200
    assert second.body["turn"] == 2
    total = first.body["cost_usd"] + second.body["cost_usd"]
    assert second.body["session_cost_usd"] == pytest.approx(total)
    # The second turn's prompt carries the first turn, with the session scope.
    prompt = fake_model.requests[2].body["messages"]
    assert [m["role"] for m in prompt[:4]] == ["system", "user", "assistant", "user"]
    assert prompt[1]["content"] == "Where is my order A-1001?"

    view = request("GET", f"{BASE}/{sid}")
    assert view.status == 200
    body = view.body
    assert (body["turns"], body["message_count"], body["metadata"]) == (2, 4, {"channel": "chat"})
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 2
    assert body["messages"][2]["content"] == "When will it arrive?"
    assert body["cost_usd"] == pytest.approx(total)
    assert body["usage"]["input_tokens"] == (
        first.body["usage"]["input_tokens"] + second.body["usage"]["input_tokens"]
    )
    assert body["next_cursor"] is None

    page = request("GET", f"{BASE}/{sid}", query={"limit": "3"})
    assert [m["index"] for m in page.body["messages"]] == [1, 2, 3]
    assert page.body["next_cursor"] == "3"
    rest = request("GET", f"{BASE}/{sid}", query={"limit": "3", "cursor": "3"})
    assert [m["index"] for m in rest.body["messages"]] == [4]
    assert rest.body["next_cursor"] is None

    deleted = request("DELETE", f"{BASE}/{sid}")
    assert deleted.status == 204
    for method, path, payload in (
        ("GET", f"{BASE}/{sid}", None),
        ("POST", f"{BASE}/{sid}/messages", {"message": "hi"}),
        ("DELETE", f"{BASE}/{sid}", None),
    ):
        gone = request(method, path, payload)
        assert gone.status == 404, (method, gone.body)
        assert gone.body["error"]["code"] == "session_not_found"
    left = table(support).query(
        KeyConditionExpression="sid = :p", ExpressionAttributeValues={":p": pk(sid)}
    )
    assert left["Items"] == []  # the messages are gone, not only the head


def test_sample_event_reaches_the_message_route(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    tenant = "7f3c2a1b9d8e4f60a1b2c3d4e5f60718"
    sid = create(tenant=tenant)
    event = load_event("api/session_message.json")
    # The authorizer's space-separated scopes (kept out of the sample: Powertools' parser
    # model types requestContext.authorizer.scopes as a list, the Cognito shape).
    event["requestContext"]["authorizer"]["scopes"] = "sessions"
    event["path"] = event["path"].replace("s_0123456789abcdef0123456789abcdef", sid)
    reply = call(api.lambda_handler, event)
    assert reply.status == 200, reply.body
    assert reply.body["turn"] == 1
    assert reply.body["request_id"] == event["requestContext"]["requestId"]


def test_other_tenants_and_unknown_sessions_are_404(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    sid = create("tenant-a")
    for tenant, path in (
        ("tenant-b", f"{BASE}/{sid}"),  # exists, but not for this tenant: never 403
        ("tenant-a", f"{BASE}/s_doesnotexist"),
        ("tenant-a", f"{BASE}/not%20an%20id!"),
    ):
        for method, payload in (("GET", None), ("DELETE", None)):
            reply = request(method, path, payload, tenant=tenant)
            assert reply.status == 404, (tenant, path, method)
            assert reply.body["error"]["code"] == "session_not_found"
        posted = request("POST", f"{path}/messages", {"message": "hi"}, tenant=tenant)
        assert posted.status == 404
        assert posted.body["error"]["code"] == "session_not_found"
    assert fake_model.call_count() == 0
    assert request("GET", f"{BASE}/{sid}").status == 200  # untouched for its owner


def test_agents_without_sessions_have_no_session_routes(serve_agent: Any) -> None:
    serve_agent("triage")
    reply = request("POST", "/v1/agents/triage/sessions", {"metadata": {}})
    assert reply.status == 404
    assert reply.body["error"]["code"] == "not_found"


def test_an_expired_session_is_404_before_ttl_deletes_it(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    sid = create()
    assert send(sid, "hello").status == 200
    # TTL deletion lags (up to days in AWS): the head is still there, but expired.
    table(support).update_item(
        Key={"sid": pk(sid), "sk": HEAD_SK},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": int(time.time()) - 1},
    )
    for method, path, payload in (
        ("GET", f"{BASE}/{sid}", None),
        ("POST", f"{BASE}/{sid}/messages", {"message": "still there?"}),
        ("DELETE", f"{BASE}/{sid}", None),
    ):
        reply = request(method, path, payload)
        assert reply.status == 404
        assert reply.body["error"]["code"] == "session_not_found"
    assert fake_model.call_count() == 2  # only the first turn's calls


def test_expiry_follows_the_idle_ttl(support: dict[str, Any], fake_model: FakeModelServer) -> None:
    svc = service(with_sessions(ttl_s=60))
    created = svc.create("tenant-a", {})
    head = table(support).get_item(Key={"sid": pk(created["session_id"]), "sk": HEAD_SK})["Item"]
    assert int(head["expires_at"]) - int(time.time()) in range(45, 61)
    assert head["expires_at"] < head["ends_at"]  # idle expiry, then the hard end


def test_a_message_over_the_limit_is_413(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    sid = create()
    reply = send(sid, "x" * 4_001)  # support accepts 4,000 characters
    assert reply.status == 413
    assert reply.body["error"]["code"] == "message_too_large"
    assert reply.body["error"]["details"] == {"limit": 4_000, "size": 4_001}
    assert fake_model.call_count() == 0
    assert stored_messages(support, sid) == []
    too_much = request("POST", BASE, {"metadata": {"blob": "y" * 5_000}})
    assert too_much.status == 413
    assert too_much.body["error"]["code"] == "payload_too_large"


def test_an_idempotency_key_replays_the_turn(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    sid = create()
    first = send(sid, "Where is A-1001?", headers={"Idempotency-Key": "msg-1"})
    calls = fake_model.call_count()
    again = send(sid, "Where is A-1001?", headers={"Idempotency-Key": "msg-1"})
    assert first.status == again.status == 200
    assert again.body == first.body
    assert fake_model.call_count() == calls
    reused = send(sid, "Something else", headers={"Idempotency-Key": "msg-1"})
    assert reused.status == 409
    assert reused.body["error"]["code"] == "idempotency_key_reused"
    # The key is scoped by session: the same key in another session is a new turn.
    other = create()
    assert send(other, "Where is A-1001?", headers={"Idempotency-Key": "msg-1"}).status == 200
    assert len(stored_messages(support, sid)) == 2
    assert len(stored_messages(support, other)) == 2


def test_a_failed_turn_stores_nothing_and_frees_the_session(
    support: dict[str, Any], fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_MODEL_MAX_ATTEMPTS", "1")
    composition.reset()
    sid = create()
    fake_model.inject(Fault(status=500, times=-1))  # every model, fallbacks included
    failed = send(sid, "hello")
    assert failed.status == 503, failed.body
    assert failed.body["error"]["code"] == "model_unavailable"
    assert stored_messages(support, sid) == []
    fake_model.reset()
    ok = send(sid, "hello again")
    assert ok.status == 200
    assert ok.body["turn"] == 1


# --- concurrency ----------------------------------------------------------------------


def run_concurrently(count: int, work: Any) -> list[Any]:
    barrier = threading.Barrier(count)

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return work(i)
        except StratusError as err:
            return err

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_enqueue_20_concurrent_messages_all_answered_in_arrival_order(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    sid = create()
    # One service per thread: 20 Lambda instances sharing nothing but DynamoDB.
    services = [service() for _ in range(20)]

    def work(i: int) -> Any:
        return services[i].post_message(
            "tenant-a", sid, f"message number {i:02d}", request_id=f"req-{i:02d}"
        )

    results = run_concurrently(20, work)
    assert all(isinstance(r, dict) for r in results), [
        r for r in results if not isinstance(r, dict)
    ]
    assert sorted(r["turn"] for r in results) == list(range(1, 21))
    messages = stored_messages(support, sid)
    assert len(messages) == 40
    assert_history_is_whole(messages, 20)
    for i, result in enumerate(results):
        user = messages[2 * result["turn"] - 2]
        assert user["content"] == f"message number {i:02d}"
        assert result["request_id"] == f"req-{i:02d}"
    # Arrival order: turn n answered ticket n (the order messages were stored in line).
    for result in results:
        entry = table(support).get_item(Key={"sid": pk(sid), "sk": queue_sk(result["turn"])})
        assert entry["Item"]["request_id"] == result["request_id"]
        assert entry["Item"]["status"] == "done"
    head = table(support).get_item(Key={"sid": pk(sid), "sk": HEAD_SK})["Item"]
    assert (head["turns"], head["msg_count"], head["done_ticket"]) == (20, 40, 20)
    assert "lock_owner" not in head
    assert float(head["cost_usd"]) == pytest.approx(max(r["session_cost_usd"] for r in results))


def test_reject_answers_busy_and_never_loses_or_duplicates(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    spec = with_sessions(policy="reject")
    sid = service(spec).create("tenant-a", {})["session_id"]
    services = [service(spec) for _ in range(20)]
    # Slow turns, so that messages really overlap them.
    fake_model.inject(Fault(status=200, delay_s=0.05, times=-1))

    def work(i: int) -> Any:
        return services[i].post_message("tenant-a", sid, f"message {i:02d}", request_id=f"r{i}")

    results = run_concurrently(20, work)
    ok = [r for r in results if isinstance(r, dict)]
    busy = [r for r in results if isinstance(r, SessionBusy)]
    assert len(ok) + len(busy) == 20, results
    assert ok and busy
    assert sorted(r["turn"] for r in ok) == list(range(1, len(ok) + 1))
    messages = stored_messages(support, sid)
    assert_history_is_whole(messages, len(ok))
    assert {m["content"] for m in messages if m["role"] == "user"} == {
        f"message {i:02d}" for i, r in enumerate(results) if isinstance(r, dict)
    }
    # Free again: the next message goes through.
    assert services[0].post_message("tenant-a", sid, "after", request_id="x")["turn"] == len(ok) + 1


def test_a_crashed_turns_lock_expires_and_its_message_is_still_answered(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    sid = create()
    sessions = table(support)
    now = int(time.time())
    # A Lambda took ticket 1, locked the session, started the turn and died.
    sessions.put_item(Item={"sid": pk(sid), "sk": COUNTER_SK, "n": 1, "expires_at": now + 99})
    sessions.put_item(
        Item={
            "sid": pk(sid),
            "sk": queue_sk(1),
            "ticket": 1,
            "status": "running",
            "message": "first, from the crashed request",
            "request_id": "crashed",
            "created_ms": now * 1000,
            "expires_at": now + 99,
        }
    )
    sessions.update_item(
        Key={"sid": pk(sid), "sk": HEAD_SK},
        UpdateExpression="SET lock_owner = :o, lock_until = :u",
        ExpressionAttributeValues={":o": "dead-lambda", ":u": (now - 1) * 1000},
    )
    reply = send(sid, "second")
    assert reply.status == 200, reply.body
    assert reply.body["turn"] == 2
    messages = stored_messages(support, sid)
    assert_history_is_whole(messages, 2)
    assert messages[0]["content"] == "first, from the crashed request"
    # The dead turn can never commit late: the takeover moved the version on.
    head = sessions.get_item(Key={"sid": pk(sid), "sk": HEAD_SK})["Item"]
    assert "lock_owner" not in head


def test_reject_while_a_live_turn_holds_the_lock_then_after_it_expires(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    svc = service(with_sessions(policy="reject"))
    sid = svc.create("tenant-a", {})["session_id"]
    now_ms = int(time.time() * 1000)
    lock = {"sid": pk(sid), "sk": HEAD_SK}
    table(support).update_item(
        Key=lock,
        UpdateExpression="SET lock_owner = :o, lock_until = :u",
        ExpressionAttributeValues={":o": "other", ":u": now_ms + 60_000},
    )
    with pytest.raises(SessionBusy):
        svc.post_message("tenant-a", sid, "hi", request_id="r1")
    table(support).update_item(
        Key=lock, UpdateExpression="SET lock_until = :u", ExpressionAttributeValues={":u": 1}
    )
    assert svc.post_message("tenant-a", sid, "hi", request_id="r2")["turn"] == 1
    assert fake_model.call_count() == 2


def test_an_enqueued_message_that_times_out_is_withdrawn_not_lost(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    svc = service(with_sessions(enqueue_wait_s=0.3))
    sid = svc.create("tenant-a", {})["session_id"]
    key = {"sid": pk(sid), "sk": HEAD_SK}
    table(support).update_item(
        Key=key,
        UpdateExpression="SET lock_owner = :o, lock_until = :u",
        ExpressionAttributeValues={":o": "slow", ":u": int(time.time() * 1000) + 60_000},
    )
    with pytest.raises(SessionBusy) as busy:
        svc.post_message("tenant-a", sid, "withdrawn", request_id="r1")
    assert busy.value.details["queued"] is False
    entry = table(support).get_item(Key={"sid": pk(sid), "sk": queue_sk(1)})["Item"]
    assert (entry["status"], entry["message"]) == ("cancelled", "withdrawn")
    assert fake_model.call_count() == 0
    # Once the session is free, the next message skips the withdrawn one and is turn 1.
    table(support).update_item(Key=key, UpdateExpression="REMOVE lock_owner, lock_until")
    assert svc.post_message("tenant-a", sid, "kept", request_id="r2")["turn"] == 1
    assert stored_messages(support, sid)[0]["content"] == "kept"


# --- context: summary and a bounded prompt --------------------------------------------


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The estimate the context budget is kept in (``stratus.tokens``, per chat message)."""
    return sum(
        message_tokens({"role": m["role"], "content": m.get("content") or ""}) for m in messages
    )


def test_older_turns_are_summarised_and_the_prompt_stays_bounded(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    budget = 700
    spec = with_sessions(
        context_token_budget=budget, summarize_after_tokens=350, max_recent_messages=12
    )
    svc = service(spec)
    sid = svc.create("tenant-a", {})["session_id"]
    sizes = []
    for turn in range(1, 16):
        before = len(fake_model.requests)
        text = f"turn {turn}: " + "please remember this detail " * 3
        assert svc.post_message("tenant-a", sid, text, request_id=f"r{turn}")["turn"] == turn
        turn_requests = fake_model.requests[before:]
        # The agent's first call of the turn: system, [summary], history, the new message.
        first = next(r for r in turn_requests if r.body.get("tools"))
        sizes.append(prompt_tokens(first.body["messages"]))
        assert first.body["messages"][-1]["content"] == text
    assert max(sizes) <= budget
    summaries = [r for r in fake_model.requests if not r.body.get("tools")]
    assert summaries, "the summariser never ran"
    assert all(r.model == "gpt-5-mini" for r in summaries)  # the cheap tier
    assert "running summary" in summaries[0].body["messages"][0]["content"]
    last = [r for r in fake_model.requests if r.body.get("tools")][-1].body["messages"]
    assert last[1]["role"] == "system" and last[1]["content"].startswith("Summary of the earlier")
    # Everything stays readable through the API.
    view = svc.get("tenant-a", sid, limit=200)
    assert view["message_count"] == 30 and len(view["messages"]) == 30
    assert view["summarized_through"] > 0


class CallCounter:
    """Counts calls to one DynamoDB table and the items they returned (botocore events).

    Other parts of the runtime (budgets, the call ledger) use other tables through
    the same client; only the sessions table's calls are what a session costs.
    """

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.calls: list[str] = []
        self.items = 0
        self._lock = threading.Lock()

    @staticmethod
    def _tables(params: dict[str, Any]) -> set[str]:
        """Every table a request names (a batch or a transaction can name several)."""
        names = {str(params["TableName"])} if "TableName" in params else set()
        names.update(str(name) for name in params.get("RequestItems", {}))
        for item in params.get("TransactItems", []):
            names.add(str(next(iter(item.values()))["TableName"]))
        return names

    # The table is kept in the request's own context: the runtime's waves make calls
    # from several threads at once, so one attribute for "the current call" would mix
    # one request's table with another's answer.
    def before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["counted_tables"] = self._tables(params)

    def after(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any],
        **_: Any,
    ) -> None:  # fmt: skip
        if self.table_name in context.get("counted_tables", ()):
            with self._lock:
                self.calls.append(model.name)
                self.items += len(parsed.get("Items", [])) + (1 if parsed.get("Item") else 0)
                self.items += len(parsed.get("Responses", {}).get(self.table_name, []))

    def install(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb", self.before)
        client.meta.events.register("after-call.dynamodb", self.after)

    def remove(self, client: Any) -> None:
        client.meta.events.unregister("before-parameter-build.dynamodb", self.before)
        client.meta.events.unregister("after-call.dynamodb", self.after)


def seed(cloud: dict[str, Any], sid: str, count: int, *, summary_upto: int) -> None:
    """Write a session of ``count`` messages straight into the table (store key format)."""
    now = int(time.time())
    turns = count // 2
    sessions = table(cloud)
    pending = 0
    with sessions.batch_writer() as batch:
        for index in range(1, count + 1):
            role = "user" if index % 2 else "assistant"
            content = f"{role} message {index} " + "lorem ipsum " * 8
            message = StoredMessage.new(index, role, content, (index + 1) // 2, now * 1000)
            batch.put_item(Item=message.item(pk(sid), now + 86_400))
            if index > summary_upto:
                pending += message.tokens
        if summary_upto:
            batch.put_item(
                Item={
                    "sid": pk(sid),
                    "sk": "S",
                    "text": "The customer asked about many orders.",
                    "upto": summary_upto,
                    "expires_at": now + 86_400,
                }
            )
    sessions.update_item(
        Key={"sid": pk(sid), "sk": HEAD_SK},
        UpdateExpression="SET turns = :t, msg_count = :c, summary_upto = :s, pending_tokens = :p",
        ExpressionAttributeValues={":t": turns, ":c": count, ":s": summary_upto, ":p": pending},
    )


@pytest.mark.parametrize("summary_upto", [4_990, 0], ids=["summarised", "never-summarised"])
def test_a_5000_message_session_reads_and_sends_a_bounded_amount(
    support: dict[str, Any], fake_model: FakeModelServer, summary_upto: int
) -> None:
    runtime = Runtime(Settings())
    svc = service(runtime=runtime)
    sid = svc.create("tenant-a", {})["session_id"]
    seed(support, sid, 5_000, summary_upto=summary_upto)
    counter = CallCounter(support["tables"]["sessions"])
    client = runtime.clients.client("dynamodb")  # the client the store uses
    counter.install(client)
    try:
        reply = svc.post_message("tenant-a", sid, "And order A-1001?", request_id="big")
    finally:
        counter.remove(client)
    assert reply["turn"] == 2_501
    policy = svc.policy
    # Head, counter, summary, the window (and a fold read when summarising), the commit.
    assert len(counter.calls) <= 10, counter.calls
    assert counter.items <= 2 * policy.max_recent_messages + 4, counter.items
    first = next(r for r in fake_model.requests if r.body.get("tools"))
    assert prompt_tokens(first.body["messages"]) <= policy.context_token_budget
    newest = table(support).query(
        KeyConditionExpression="sid = :p AND begins_with(sk, :m)",
        ExpressionAttributeValues={":p": pk(sid), ":m": "M#"},
        ScanIndexForward=False,
        Limit=3,
    )["Items"]
    assert [(int(m["index"]), m["role"]) for m in newest] == [
        (5_002, "assistant"),
        (5_001, "user"),
        (5_000, "assistant"),
    ]
    assert newest[1]["content"] == "And order A-1001?"


def test_every_item_stays_far_below_the_dynamodb_limit(
    support: dict[str, Any], fake_model: FakeModelServer
) -> None:
    sid = create()
    assert send(sid, "é" * 4_000).status == 200  # the longest message, in 2-byte characters
    for item in table(support).query(
        KeyConditionExpression="sid = :p", ExpressionAttributeValues={":p": pk(sid)}
    )["Items"]:
        assert len(json.dumps(item, default=str).encode()) < 100_000

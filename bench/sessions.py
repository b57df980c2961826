"""What one session turn costs as the session grows: DynamoDB reads, prompt tokens, time.

For each session length (10, 1,000 and 5,000 stored messages) a session of the
``support`` agent is seeded straight into the sessions table (moto, in-process,
with ``infra.local.moto_atomic``), older turns already summarised as the service
would have left them, and then a few real turns run through
``stratus.sessions.SessionService`` against the offline fake model server.
Per turn: the calls to the sessions table, the items they returned, the
estimated prompt tokens of the agent's first model call and the ones the fake
server counted, and the wall time. moto latency is not DynamoDB latency; the
point is that the numbers do not grow with the session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from bench.stats import summarize
from infra.local.fake_model import FakeModelServer

SIZES = (10, 1_000, 5_000)
HEADING = "## Sessions: reads, prompt and time per turn as a session grows"

ENV = {
    "STRATUS_AGENT": "support",
    "STRATUS_STAGE": "bench",
    "OPENAI_API_KEY": "sk-bench",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_SERVICE_NAME": "stratus",
    "POWERTOOLS_METRICS_NAMESPACE": "StratusBench",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
}


class _Counter:
    """Calls to one table and the items they returned, from botocore events."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.calls = 0
        self.items = 0
        self._current: str | None = None

    def before(self, params: dict[str, Any], **_: Any) -> None:
        name = params.get("TableName")
        for item in params.get("TransactItems", []):
            name = next(iter(item.values()))["TableName"]
            break
        self._current = name

    def after(self, parsed: dict[str, Any], **_: Any) -> None:
        if self._current == self.table_name:
            self.calls += 1
            self.items += len(parsed.get("Items", [])) + (1 if parsed.get("Item") else 0)


@contextmanager
def _environment(server: FakeModelServer) -> Iterator[dict[str, str]]:
    import boto3
    from moto import mock_aws

    from infra.definitions import TABLES, create_table_kwargs
    from infra.local import moto_atomic
    from stratus import composition

    drop = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "OPENAI_BASE_URL")
    saved = {name: os.environ.pop(name) for name in drop if name in os.environ}
    try:
        with mock.patch.dict(os.environ, {**ENV, "OPENAI_BASE_URL": server.url}), mock_aws():
            moto_atomic.install()
            client = boto3.client("dynamodb")
            names = {}
            for table in TABLES:
                name = f"bench-{table.name}"
                client.create_table(**create_table_kwargs(table, name))
                names[table.name] = name
                os.environ[table.env_var] = name
            composition.reset()
            try:
                yield names
            finally:
                moto_atomic.uninstall()
                composition.reset()
    finally:
        os.environ.update(saved)


def _seed(table_name: str, pk: str, count: int, summary_upto: int) -> None:
    import boto3

    from stratus.sessions import HEAD_SK, SUMMARY_SK, Role, StoredMessage

    now = int(time.time())
    table = boto3.resource("dynamodb").Table(table_name)
    pending = 0
    with table.batch_writer() as batch:
        for index in range(1, count + 1):
            role: Role = "user" if index % 2 else "assistant"
            content = f"{role} message {index}: " + "where is my parcel, it was due " * 3
            message = StoredMessage.new(index, role, content, (index + 1) // 2, now * 1000)
            if index > summary_upto:
                pending += message.tokens
            batch.put_item(Item=message.item(pk, now + 86_400))
        if summary_upto:
            batch.put_item(
                Item={
                    "sid": pk,
                    "sk": SUMMARY_SK,
                    "text": "The customer asked about several late parcels; ids A-1001..A-1090.",
                    "upto": summary_upto,
                    "expires_at": now + 86_400,
                }
            )
    table.update_item(
        Key={"sid": pk, "sk": HEAD_SK},
        UpdateExpression="SET turns = :t, msg_count = :c, summary_upto = :s, pending_tokens = :p",
        ExpressionAttributeValues={
            ":t": count // 2,
            ":c": count,
            ":s": summary_upto,
            ":p": pending,
        },
    )


def measure(
    turns: int = 3, sizes: tuple[int, ...] = SIZES, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Per-turn numbers for each session length (``turns`` turns each)."""
    from functions.agents import load_agent
    from stratus.composition import Runtime
    from stratus.config import Settings
    from stratus.tokens import message_tokens

    spec = load_agent("support")
    policy = spec.sessions
    assert policy is not None
    rows = []
    with FakeModelServer(quiet=True) as server, _environment(server) as names:
        runtime = Runtime(Settings())
        service = runtime.session_service(spec)
        client = runtime.clients.client("dynamodb")
        for size in sizes:
            log(f"sessions: {size} messages, {turns} turns")
            session_id = service.create("tenant-bench", {})["session_id"]
            pk = f"tenant-bench#support#{session_id}"
            # As the service leaves a long session: all but the newest turns summarised.
            _seed(names["sessions"], pk, size, summary_upto=max(0, size - 12))
            reads: list[int] = []
            items: list[int] = []
            prompt_est: list[int] = []
            times: list[float] = []
            messages: list[dict[str, Any]] = []
            for turn in range(turns):
                counter = _Counter(names["sessions"])
                client.meta.events.register("before-parameter-build.dynamodb", counter.before)
                client.meta.events.register("after-call.dynamodb", counter.after)
                server.reset()
                started = time.perf_counter()
                try:
                    service.post_message(
                        "tenant-bench",
                        session_id,
                        f"And what about order A-{1000 + turn}?",
                        request_id=f"bench-{size}-{turn}",
                    )
                finally:
                    client.meta.events.unregister("before-parameter-build.dynamodb", counter.before)
                    client.meta.events.unregister("after-call.dynamodb", counter.after)
                times.append((time.perf_counter() - started) * 1000)
                first = next(r for r in server.requests if r.body.get("tools"))
                messages = first.body["messages"]
                prompt_est.append(
                    sum(
                        message_tokens({"role": m["role"], "content": m.get("content") or ""})
                        for m in messages
                    )
                )
                reads.append(counter.calls)
                items.append(counter.items)
            rows.append(
                {
                    "messages": size,
                    "turns": turns,
                    "table_calls": max(reads),
                    "items_read": max(items),
                    "prompt_tokens_estimated": max(prompt_est),
                    "prompt_messages": len(messages),
                    "turn_ms": summarize(times),
                }
            )
    return {
        "agent": "support",
        "context_token_budget": policy.context_token_budget,
        "max_recent_messages": policy.max_recent_messages,
        "rows": rows,
    }


def render(data: dict[str, Any]) -> list[str]:
    lines = [
        HEADING,
        "",
        f"Agent `{data['agent']}` (context budget {data['context_token_budget']} estimated "
        f"tokens, at most {data['max_recent_messages']} unsummarised messages read per turn). "
        "Each session is seeded with the given number of stored messages, older turns already "
        "summarised, then real turns run through `SessionService` (moto in-process, fake "
        "model). *table calls* and *items read* are the worst turn's requests to the sessions "
        "table and the items they returned (GetItem, Query); *prompt* is the estimate of the "
        "agent's first model call (system prompt, summary, recent turns, the new message; tool "
        "definitions excluded). None of them grows with the session. The time does grow here, "
        "and only on moto: its `TransactWriteItems` deep-copies every table it touches (for "
        "rollback), so a turn's commit costs O(table size) in moto, while DynamoDB charges a "
        "transaction per item written. moto latency is not DynamoDB latency.",
        "",
        "| stored messages | turns | table calls | items read | prompt tokens (est.) "
        "| prompt messages | turn median ms | turn p90 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['messages']:,} | {row['turns']} | {row['table_calls']} "
            f"| {row['items_read']} | {row['prompt_tokens_estimated']:,} "
            f"| {row['prompt_messages']} | {row['turn_ms']['median']:,.1f} "
            f"| {row['turn_ms']['p90']:,.1f} |"
        )
    lines.append("")
    return lines

"""A session turn's sequential DynamoDB round trips on the sessions table (issue 11).

Target: at most 4 besides the model calls, for both double-texting policies,
whatever the session's length (the messages read are capped by the context
window; the summary is read with the head). Measured from botocore with
:func:`bench.roundtrips.recording` (5 ms injected per request, so that requests
issued together overlap and count once) on moto in-process.

The pinned tests run the real :class:`~stratus.sessions.SessionService` and
:class:`~stratus.sessions.DynamoSessionStore` with a scripted turn runner (no
model, no gateway), so every DynamoDB request of the trace is a sessions-table
request: ``trace.round_trips("dynamodb")`` counts transactions and batch reads
too, which carry no top-level ``TableName``. One test runs the whole runtime
(gateway, budgets, ledger) against the offline fake model and checks the
sessions table alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
import pytest

from bench.roundtrips import Trace, recording
from functions.agents import load_agent
from infra.local.fake_model import FakeModelServer
from stratus import ddb
from stratus.agents import AgentSpec, ToolContext
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.sessions import HEAD_SK, DynamoSessionStore, Role, SessionService, StoredMessage
from stratus.usage import Usage

AGENT = "support"
LATENCY_S = 0.05  # long enough that calls issued together overlap on a loaded machine
MAX_ROUND_TRIPS = 4
SUMMARY = "The customer asked about many orders."


@dataclass
class Result:
    output: str
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))
    cost_usd: Decimal = Decimal("0.001")
    model: str = "gpt-5-mini"
    #: The runner's executed tool calls (``stratus.runner.ToolCallRecord``); none here.
    tool_calls: list[Any] = field(default_factory=list)


class Scripted:
    """A turn runner that answers at once and remembers what each turn was sent."""

    def __init__(self, prefix: str = "reply to: ") -> None:
        self.prefix = prefix
        self.histories: list[list[dict[str, Any]]] = []

    def run(
        self,
        user_input: Any,
        *,
        ctx: ToolContext,
        deadline: Any = None,
        history: Sequence[dict[str, Any]] = (),
    ) -> Result:
        self.histories.append(list(history))
        return Result(f"{self.prefix}{user_input}")


def spec(policy: str) -> AgentSpec:
    base = load_agent(AGENT)
    assert base.sessions is not None
    return base.model_copy(update={"sessions": base.sessions.model_copy(update={"policy": policy})})


def sessions_table(cloud: dict[str, Any]) -> ddb.Table:
    return ddb.Table(cloud["tables"]["sessions"], boto3.client("dynamodb"))


def seed(table: ddb.Table, pk: str, count: int, *, summary_upto: int) -> None:
    """``count`` stored messages (and a summary through ``summary_upto``), store key format."""
    now = int(time.time())
    raw = boto3.resource("dynamodb").Table(table.name)
    pending = 0
    with raw.batch_writer() as batch:
        for index in range(1, count + 1):
            role: Role = "user" if index % 2 else "assistant"
            content = f"{role} message {index} " + "lorem ipsum " * 8
            message = StoredMessage.new(index, role, content, (index + 1) // 2, now * 1000)
            batch.put_item(Item=message.item(pk, now + 86_400))
            if index > summary_upto:
                pending += message.tokens
        if summary_upto:
            batch.put_item(
                Item={
                    "sid": pk,
                    "sk": "S",
                    "text": SUMMARY,
                    "upto": summary_upto,
                    "expires_at": now + 86_400,
                }
            )
    raw.update_item(
        Key={"sid": pk, "sk": HEAD_SK},
        UpdateExpression="SET turns = :t, msg_count = :c, summary_upto = :s, pending_tokens = :p",
        ExpressionAttributeValues={
            ":t": count // 2,
            ":c": count,
            ":s": summary_upto,
            ":p": pending,
        },
    )


def failure(trace: Trace, label: str) -> str:
    lines = trace.describe("dynamodb")
    return f"{label}: {len(lines)} round trips, {trace.requests('dynamodb')} requests\n" + (
        "\n".join(lines)
    )


# (stored messages, summarised through): a short session, and a long one whose older
# turns are already in the summary (a turn that has to summarise is measured below).
SESSIONS = [(10, 0), (200, 190)]


@pytest.mark.parametrize("policy", ["enqueue", "reject"])
@pytest.mark.parametrize(("count", "summary_upto"), SESSIONS, ids=["10-messages", "200-messages"])
def test_a_turn_costs_at_most_four_round_trips_on_the_sessions_table(
    cloud: dict[str, Any], policy: str, count: int, summary_upto: int
) -> None:
    table = sessions_table(cloud)
    runner = Scripted()
    svc = SessionService(
        spec(policy), Settings(), DynamoSessionStore(table), runner, Scripted("summary: ")
    )
    sid = svc.create("tenant-a", {})["session_id"]
    seed(table, svc.key("tenant-a", sid).pk, count, summary_upto=summary_upto)

    with recording(latency_s=LATENCY_S) as trace:
        reply = svc.post_message("tenant-a", sid, "And order A-1001?", request_id="rt")

    label = f"{policy}, {count} messages"
    print(failure(trace, label))  # the figures the report quotes (pytest -s)
    assert trace.round_trips("dynamodb") <= MAX_ROUND_TRIPS, failure(trace, label)
    assert trace.round_trips("dynamodb", table="sessions") <= MAX_ROUND_TRIPS, failure(trace, label)
    # The turn itself is whole: numbered after the seeded ones, with the stored context.
    assert reply["turn"] == count // 2 + 1
    assert reply["reply"] == "reply to: And order A-1001?"
    (history,) = runner.histories
    if summary_upto:
        assert history[0] == {
            "role": "system",
            "content": f"Summary of the earlier conversation:\n{SUMMARY}",
        }
    assert history[-1]["content"].startswith(f"assistant message {count} ")
    seeded = [m for m in history if m["role"] != "system"]
    assert len(seeded) == count - summary_upto  # every unsummarised message fits the budget
    view = svc.get("tenant-a", sid, limit=3, after=count)
    assert [m["content"] for m in view["messages"]] == [
        "And order A-1001?",
        "reply to: And order A-1001?",
    ]
    assert (view["turns"], view["message_count"]) == (count // 2 + 1, count + 2)


@pytest.mark.parametrize("policy", ["enqueue", "reject"])
def test_a_summarising_turn_costs_at_most_two_more(cloud: dict[str, Any], policy: str) -> None:
    """A turn that folds older turns into the summary: the fold's read and its write."""
    table = sessions_table(cloud)
    summarizer = Scripted("summary: ")
    svc = SessionService(
        spec(policy), Settings(), DynamoSessionStore(table), Scripted(), summarizer
    )
    sid = svc.create("tenant-a", {})["session_id"]
    seed(table, svc.key("tenant-a", sid).pk, 200, summary_upto=0)

    with recording(latency_s=LATENCY_S) as trace:
        reply = svc.post_message("tenant-a", sid, "And order A-1001?", request_id="rt")

    label = f"{policy}, 200 messages, summarising"
    print(failure(trace, label))
    assert trace.round_trips("dynamodb") <= MAX_ROUND_TRIPS + 2, failure(trace, label)
    assert reply["turn"] == 101
    assert len(summarizer.histories) == 1
    assert svc.get("tenant-a", sid, limit=1)["summarized_through"] > 0


def test_the_whole_runtime_keeps_the_sessions_table_within_four_round_trips(
    serve_agent: Any, cloud: dict[str, Any], fake_model: FakeModelServer
) -> None:
    """The real runner and gateway (budgets, ledger) against the offline fake model."""
    serve_agent(AGENT)
    svc = Runtime(Settings()).session_service(load_agent(AGENT))
    sid = svc.create("tenant-a", {})["session_id"]
    seed(sessions_table(cloud), svc.key("tenant-a", sid).pk, 10, summary_upto=0)
    svc.post_message("tenant-a", sid, "Hello", request_id="warm")  # a warm process

    with recording(latency_s=LATENCY_S) as trace:
        reply = svc.post_message("tenant-a", sid, "And order A-1001?", request_id="rt")

    lines = trace.describe("dynamodb", table="sessions")
    message = f"{len(lines)} round trips on the sessions table:\n" + "\n".join(lines)
    print(message)
    assert trace.round_trips("dynamodb", table="sessions") <= MAX_ROUND_TRIPS, message
    assert reply["turn"] == 7
    assert fake_model.call_count() >= 2  # the model calls happened (not counted above)

"""AWS calls and DynamoDB capacity per request, and the gateway's latency over ``openai``.

Two parts, both in this process, against moto (in-process, with
``infra.local.moto_atomic``) and the offline fake model server:

1. **AWS calls per request.** Every botocore API call is counted by wrapping
   ``botocore.client.BaseClient._make_api_call`` (so the clients of
   ``stratus.aws``, Powertools idempotency and anything else are all seen),
   with the service, the operation, the table and the code that made it (the
   innermost caller outside botocore/boto3). Scenarios: a synchronous invoke of
   ``triage`` through the real API handler without and with an
   ``Idempotency-Key``, a retry of that idempotent request, a ``support``
   session turn (``SessionService.post_message`` on a 10-message session), and
   ``ModelGateway.chat`` alone (a first call and a call-ledger replay).

   **DynamoDB capacity units are computed, not measured**: moto does not report
   ``ConsumedCapacity`` reliably, so each DynamoDB call is priced with the
   on-demand rules (see :data:`RULES`) from the sizes of the items it touched.
   Item sizes come from the items themselves, read from moto before and after
   the call with an extra, uncounted ``GetItem`` on a separate client (the
   nearest thing to what DynamoDB meters), and the size of an item follows
   DynamoDB's documented formula approximately (:func:`item_size`).

2. **Gateway latency.** Interleaved samples of (a) a raw ``openai``
   ``chat.completions.parse``, (b) ``stratus.llm.ModelClient.complete`` (the
   wrapper without the gateway), (c) ``ModelGateway.chat`` for the same request
   with a request scope (ledger, budgets, key buckets, breaker, rollups on moto)
   and (d) ``ModelGateway.chat`` answered from the call ledger (the same
   replayable scope and step again). moto latency is not DynamoDB latency.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from unittest import mock

from bench.common import base_event, make_event
from bench.invoke import captured_stdout, moto_tables
from bench.stats import summarize
from infra.local.fake_model import FakeModelServer

HEADING = "## AWS calls and DynamoDB capacity per request; gateway latency"
SESSION_MESSAGES = 10
LATENCY_CASES = ("raw", "client", "gateway_no_tables", "gateway", "gateway_replay")

#: The capacity rules applied to each DynamoDB call (shown in the report).
RULES = (
    "Writes (PutItem, UpdateItem, DeleteItem, each BatchWriteItem request): 1 WCU per "
    "started KB of the larger of the item before and after the call (at least 1), also "
    "when a condition fails; in TransactWriteItems x2 per item, ConditionCheck counted "
    "like a transactional write of the checked item.",
    "Reads: GetItem and each BatchGetItem key: 1 RCU per started 4 KB of the item (at "
    "least 1, also for a missing item) if strongly consistent, 0.5 if eventually "
    "consistent; TransactGetItems x2 (strongly consistent). Query and Scan: the sizes of "
    "all returned items added up, then 1 RCU (0.5 eventually consistent, always on a "
    "GSI) per started 4 KB, at least one unit; with a ProjectionExpression the full item "
    "sizes are used, as DynamoDB reads whole items.",
    "Item size: the UTF-8 length of every attribute name plus its value: strings UTF-8 "
    "bytes, binary its bytes, numbers 1 byte per 2 significant digits + 1, booleans and "
    "null 1 byte, lists and maps 3 bytes + 1 per element + the elements, sets the sum of "
    "their elements. Local/global index writes are not added (the tables' GSIs are "
    "ignored), nor is the 100-byte index overhead.",
)

_WIRE_TYPES = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})
_SKIP_MODULES = ("botocore.", "boto3.", "unittest.mock", "stratus.ddb")


# -- item sizes and capacity units


def _is_wire(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _WIRE_TYPES


def _plain(item: dict[str, Any] | None) -> dict[str, Any]:
    """An item as Python values, whether it came in DynamoDB JSON or from a resource."""
    from boto3.dynamodb.types import TypeDeserializer

    if not item:
        return {}
    if all(_is_wire(v) for v in item.values()):
        de = TypeDeserializer()
        return {name: de.deserialize(value) for name, value in item.items()}
    return item


def _wire(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    if all(_is_wire(v) for v in item.values()):
        return item
    ser = TypeSerializer()
    return {name: ser.serialize(value) for name, value in item.items()}


def value_size(value: Any) -> int:
    """The approximate stored size of one attribute value (DynamoDB's formula)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | float | Decimal):
        digits = Decimal(str(value)).normalize().as_tuple().digits
        significant = len("".join(map(str, digits)).strip("0")) or 1
        return (significant + 1) // 2 + 1
    if isinstance(value, dict):
        return 3 + sum(len(str(k).encode()) + value_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 3 + sum(value_size(v) + 1 for v in value)
    if isinstance(value, set | frozenset):
        return sum(value_size(v) for v in value)
    value_bytes = getattr(value, "value", None)  # boto3 Binary
    if isinstance(value_bytes, bytes):
        return len(value_bytes)
    return len(str(value).encode("utf-8"))


def item_size(item: dict[str, Any] | None) -> int:
    """The approximate size in bytes of an item: names plus values."""
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in _plain(item).items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, *, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


# -- recording


@dataclass
class Call:
    service: str
    operation: str
    caller: str
    table: str = ""
    rcu: float = 0.0
    wcu: float = 0.0
    error: str = ""


def _caller() -> str:
    """``module.function`` of the innermost frame outside the SDK and this module."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", "")) + "."
        if frame.f_code.co_filename != __file__ and not module.startswith(_SKIP_MODULES):
            return f"{module}{frame.f_code.co_qualname}"
        frame = frame.f_back
    return "?"


class Recorder:
    """Counts botocore API calls and prices DynamoDB ones while :meth:`recording`."""

    def __init__(self, logical: Callable[[str], str] = lambda name: name) -> None:
        self.calls: list[Call] = []
        self._logical = logical
        self._probe: Any = None
        self._original: Any = None
        self._schemas: dict[str, tuple[list[str], dict[str, list[str]]]] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Call]]:
        import boto3
        from botocore.client import BaseClient

        self.calls = []
        self._original = BaseClient._make_api_call  # type: ignore[attr-defined]
        self._probe = boto3.client("dynamodb")
        recorder = self

        def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
            return recorder._call(client, operation, params)

        with mock.patch.object(BaseClient, "_make_api_call", counting):
            yield self.calls

    # The wrapped call.

    def _call(self, client: Any, operation: str, params: dict[str, Any]) -> Any:
        service = client.meta.service_model.service_name
        call = Call(service=service, operation=operation, caller=_caller())
        self.calls.append(call)
        if service != "dynamodb":
            return self._original(client, operation, params)
        before = self._written_sizes(operation, params)
        response: Any = None
        try:
            response = self._original(client, operation, params)
        except Exception as exc:
            error = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            call.error = str(error)
            raise
        finally:
            try:
                self._price(call, operation, params, response, before)
            except Exception as exc:  # pricing must never break the measured code
                call.error = call.error or f"unpriced: {type(exc).__name__}"
        return response

    # Uncounted helpers on the probe client.

    def _raw(self, operation: str, **params: Any) -> Any:
        return self._original(self._probe, operation, params)

    def _schema(self, table: str) -> tuple[list[str], dict[str, list[str]]]:
        if table not in self._schemas:
            desc = self._raw("DescribeTable", TableName=table)["Table"]
            keys = [k["AttributeName"] for k in desc["KeySchema"]]
            indexes = {
                ix["IndexName"]: [k["AttributeName"] for k in ix["KeySchema"]]
                for ix in desc.get("GlobalSecondaryIndexes", [])
            }
            self._schemas[table] = (keys, indexes)
        return self._schemas[table]

    def _stored_size(self, table: str, key: dict[str, Any]) -> int:
        """The size of the item under ``key`` as stored now (0 if there is none)."""
        keys, _ = self._schema(table)
        wire = _wire({name: key[name] for name in keys if name in key})
        raw = self._raw("GetItem", TableName=table, Key=wire, ConsistentRead=True)
        return item_size(raw.get("Item"))

    def _key_of(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        keys, _ = self._schema(table)
        return {name: item[name] for name in keys if name in item}

    def _writes(self, operation: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(table, key) of every item a write request touches, in order."""
        if operation in ("PutItem",):
            table = params["TableName"]
            return [(table, self._key_of(table, params["Item"]))]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], params["Key"])]
        if operation == "BatchWriteItem":
            found = []
            for table, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    if "PutRequest" in request:
                        found.append((table, self._key_of(table, request["PutRequest"]["Item"])))
                    elif "DeleteRequest" in request:
                        found.append((table, request["DeleteRequest"]["Key"]))
            return found
        if operation == "TransactWriteItems":
            found = []
            for entry in params.get("TransactItems", []):
                kind, body = next(iter(entry.items()))
                table = body["TableName"]
                key = self._key_of(table, body["Item"]) if kind == "Put" else body["Key"]
                found.append((table, key))
            return found
        return []

    def _written_sizes(self, operation: str, params: dict[str, Any]) -> list[int]:
        return [self._stored_size(t, k) for t, k in self._writes(operation, params)]

    # Pricing.

    def _price(
        self,
        call: Call,
        operation: str,
        params: dict[str, Any],
        response: Any,
        before: list[int],
    ) -> None:
        tables: list[str] = []
        if "TableName" in params:
            tables.append(params["TableName"])
        tables += list(params.get("RequestItems", {}))
        for entry in params.get("TransactItems", []):
            tables.append(next(iter(entry.values()))["TableName"])
        call.table = ", ".join(dict.fromkeys(self._logical(t) for t in tables))

        if operation in (
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "BatchWriteItem",
            "TransactWriteItems",
        ):
            factor = 2 if operation == "TransactWriteItems" else 1
            after = [self._stored_size(t, k) for t, k in self._writes(operation, params)]
            pairs = zip(before, after, strict=True)
            call.wcu = float(sum(factor * write_units(max(b, a)) for b, a in pairs))
        elif operation == "GetItem":
            size = self._stored_size(params["TableName"], params["Key"])
            call.rcu = read_units(size, consistent=bool(params.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for table, request in params.get("RequestItems", {}).items():
                consistent = bool(request.get("ConsistentRead"))
                for key in request.get("Keys", []):
                    call.rcu += read_units(self._stored_size(table, key), consistent=consistent)
        elif operation == "TransactGetItems":
            for entry in params.get("TransactItems", []):
                body = entry["Get"]
                size = self._stored_size(body["TableName"], body["Key"])
                call.rcu += 2 * read_units(size, consistent=True)
        elif operation in ("Query", "Scan") and response is not None:
            table = params["TableName"]
            items = response.get("Items", [])
            if params.get("ProjectionExpression"):
                sizes = [self._stored_size(table, _plain(item)) for item in items]
            else:
                sizes = [item_size(item) for item in items]
            consistent = bool(params.get("ConsistentRead")) and "IndexName" not in params
            call.rcu = read_units(sum(sizes), consistent=consistent)


# -- summaries


def summarize_calls(calls: list[Call]) -> dict[str, Any]:
    """Totals, counts by service:operation, and rows by (operation, caller, table)."""
    by_operation = Counter(f"{c.service}:{c.operation}" for c in calls)
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for c in calls:
        row = rows.setdefault(
            (c.service, c.operation, c.caller, c.table),
            {
                "service": c.service,
                "operation": c.operation,
                "caller": c.caller,
                "table": c.table,
                "count": 0,
                "rcu": 0.0,
                "wcu": 0.0,
                "errors": [],
            },
        )
        row["count"] += 1
        row["rcu"] += c.rcu
        row["wcu"] += c.wcu
        if c.error:
            row["errors"].append(c.error)
    dynamodb = [c for c in calls if c.service == "dynamodb"]
    return {
        "aws_calls": len(calls),
        "dynamodb_calls": len(dynamodb),
        "rcu": round(sum(c.rcu for c in dynamodb), 2),
        "wcu": round(sum(c.wcu for c in dynamodb), 2),
        "by_operation": dict(sorted(by_operation.items())),
        "by_caller": list(rows.values()),
    }


def _extra(first: list[Call], steady: list[Call]) -> list[str]:
    """Calls the first request made that a later one does not (per-container caches)."""
    seen = Counter(f"{c.service}:{c.operation} ({c.caller})" for c in first)
    seen.subtract(Counter(f"{c.service}:{c.operation} ({c.caller})" for c in steady))
    return sorted(name for name, n in seen.items() for _ in range(n) if n > 0)


# -- measuring


def _logical_name(prefix: str) -> Callable[[str], str]:
    return lambda physical: physical.removeprefix(prefix)


def _reset_runtime() -> None:
    """Forget the process's runtime: the next invocation builds it from the environment."""
    from stratus import composition

    composition.reset()


def measure(invokes: int, warmup: int, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Calls and capacity per scenario, and the latency cases (``invokes`` samples each)."""
    with FakeModelServer(quiet=True) as server, captured_stdout():
        with moto_tables(server.url, "awsbench-"):
            _reset_runtime()
            try:
                scenarios = _invoke_scenarios(server, log=log)
                latency = _latency(server, invokes, warmup, log=log)
            finally:
                _reset_runtime()
        scenarios["session_turn"] = _session_scenario(server, log=log)
    return {
        "agent": "triage",
        "session_agent": "support",
        "session_messages": SESSION_MESSAGES,
        "rules": list(RULES),
        "scenarios": scenarios,
        "latency": latency,
    }


def _invoke_scenarios(server: FakeModelServer, *, log: Callable[[str], None]) -> dict[str, Any]:
    from functions.handlers import api
    from tests.support import FakeLambdaContext

    event = base_event()
    recorder = Recorder(_logical_name("awsbench-"))

    def invoke(key: str | None) -> None:
        reply = api.lambda_handler(make_event(event, key), FakeLambdaContext())
        if reply.get("statusCode") != 200:
            raise RuntimeError(f"the API handler answered {reply.get('statusCode')}: {reply}")

    def counted(fn: Callable[[], None]) -> tuple[list[Call], int]:
        server.reset()
        with recorder.recording() as calls:
            fn()
        return list(calls), server.call_count()

    first, _ = counted(lambda: invoke(None))  # a fresh container: per-process caches empty
    invoke(None)
    plain, plain_model = counted(lambda: invoke(None))
    key = f"bench-{uuid.uuid4()}"
    keyed, keyed_model = counted(lambda: invoke(key))
    retry, retry_model = counted(lambda: invoke(key))
    log("  aws calls: invokes counted")
    gateway, replay = _gateway_scenarios(server, recorder)
    log("  aws calls: gateway calls counted")
    server.reset()
    return {
        "invoke": {
            **summarize_calls(plain),
            "model_http_calls": plain_model,
            "first_invoke_extra": _extra(first, plain),
            "title": "Invoke, no Idempotency-Key",
        },
        "invoke_idempotent": {
            **summarize_calls(keyed),
            "model_http_calls": keyed_model,
            "title": "Invoke with a fresh Idempotency-Key",
        },
        "invoke_idempotent_retry": {
            **summarize_calls(retry),
            "model_http_calls": retry_model,
            "title": "The same Idempotency-Key again (a client retry)",
        },
        "gateway_call": {
            **summarize_calls(gateway[0]),
            "model_http_calls": gateway[1],
            "title": "`ModelGateway.chat` alone, request scope",
        },
        "gateway_replay": {
            **summarize_calls(replay[0]),
            "model_http_calls": replay[1],
            "title": "`ModelGateway.chat` answered by the call ledger",
        },
    }


@dataclass
class _Gateway:
    raw: Callable[[], None]
    client: Callable[[], None]
    gateway_no_tables: Callable[[], None]
    gateway: Callable[[], None]
    replay: Callable[[], None]
    model: str


def _gateway_cases(server: FakeModelServer) -> _Gateway:
    """The four latency cases, all sending the triage agent's request."""
    import openai

    from functions.agents import load_agent
    from stratus.agents import CallScope
    from stratus.composition import Runtime

    runtime = Runtime.from_env()
    settings = runtime.settings
    spec = load_agent("triage")
    user_input = json.loads(base_event()["body"])["input"]
    text = user_input if isinstance(user_input, str) else json.dumps(user_input, sort_keys=True)
    messages = [
        {"role": "system", "content": spec.system_prompt},
        {"role": "user", "content": text},
    ]
    model = settings.model_for(spec.tier)
    raw_client = openai.OpenAI(api_key="sk-bench", base_url=server.url, max_retries=0)
    model_client = runtime.model_client
    gw = runtime.gateway
    # The gateway's own work (hashing, schema, metrics, logs) without any table.
    bare = settings.model_copy(
        update={"ledger_table": "", "budgets_table": "", "usage_table": "", "limits_table": ""}
    )
    gw_bare = Runtime(bare, clients=runtime.clients).gateway
    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_output_tokens": spec.limits.max_output_tokens,
        "response_format": spec.output_schema,
    }

    def raw() -> None:
        completion = raw_client.chat.completions.parse(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            response_format=spec.output_schema,  # type: ignore[arg-type]
            max_completion_tokens=spec.limits.max_output_tokens,
        )
        if completion.choices[0].message.parsed is None:
            raise RuntimeError("the raw call returned no parsed output")

    def client() -> None:
        model_client.complete(**request)

    def scope(scope_id: str, replayable: bool) -> CallScope:
        return CallScope(
            tenant_id="bench",
            agent=spec.name,
            kind="request",
            scope_id=scope_id,
            replayable=replayable,
        )

    gateway_args: dict[str, Any] = {"agent": spec.name, "tier": spec.tier, "step": "main:1"}

    def gateway() -> None:
        # A new request each time, as the API handler makes one (not replayable).
        gw.chat(**request, **gateway_args, scope=scope(str(uuid.uuid4()), False))

    def gateway_no_tables() -> None:
        gw_bare.chat(**request, **gateway_args, scope=scope(str(uuid.uuid4()), False))

    replay_scope = scope(f"idempotency:{uuid.uuid4()}", True)

    def replay() -> None:
        result = gw.chat(**request, **gateway_args, scope=replay_scope)
        if not result.replayed:
            raise RuntimeError("the ledger did not replay the call")

    gw.chat(**request, **gateway_args, scope=replay_scope)  # the entry the replays read
    return _Gateway(
        raw=raw,
        client=client,
        gateway_no_tables=gateway_no_tables,
        gateway=gateway,
        replay=replay,
        model=model,
    )


def _gateway_scenarios(
    server: FakeModelServer, recorder: Recorder
) -> tuple[tuple[list[Call], int], tuple[list[Call], int]]:
    cases = _gateway_cases(server)
    cases.gateway()  # warm (per-process caches, as in the invoke)
    counted = []
    for fn in (cases.gateway, cases.replay):
        server.reset()
        with recorder.recording() as calls:
            fn()
        counted.append((list(calls), server.call_count()))
    return counted[0], counted[1]


def _latency(
    server: FakeModelServer, invokes: int, warmup: int, *, log: Callable[[str], None]
) -> dict[str, Any]:
    cases = _gateway_cases(server)
    runners: dict[str, Callable[[], None]] = {
        "raw": cases.raw,
        "client": cases.client,
        "gateway_no_tables": cases.gateway_no_tables,
        "gateway": cases.gateway,
        "gateway_replay": cases.replay,
    }
    for _ in range(warmup):
        for name in LATENCY_CASES:
            runners[name]()
    samples: dict[str, list[float]] = {name: [] for name in LATENCY_CASES}
    for index in range(invokes):
        shift = index % len(LATENCY_CASES)
        for name in LATENCY_CASES[shift:] + LATENCY_CASES[:shift]:
            started = time.perf_counter()
            runners[name]()
            samples[name].append((time.perf_counter() - started) * 1000.0)
        if (index + 1) % 100 == 0:
            server.reset()
    server.reset()
    log(f"  gateway latency: {invokes} samples per case")
    summaries = {name: summarize(samples[name]) for name in LATENCY_CASES}

    def paired(name: str) -> dict[str, float]:
        diffs = [b - a for a, b in zip(samples["raw"], samples[name], strict=True)]
        s = summarize(diffs, keep_samples=False)
        return {"median": s["median"], "p90": s["p90"]}

    return {
        "invokes": invokes,
        "warmup": warmup,
        "model": cases.model,
        "cases": summaries,
        "added_over_raw_ms": {name: paired(name) for name in LATENCY_CASES[1:]},
    }


def _session_scenario(server: FakeModelServer, *, log: Callable[[str], None]) -> dict[str, Any]:
    from bench import sessions
    from functions.agents import load_agent
    from stratus.composition import Runtime

    with sessions._environment(server) as names:
        recorder = Recorder(_logical_name("bench-"))
        service = Runtime.from_env().session_service(load_agent("support"))
        session_id = service.create("tenant-bench", {})["session_id"]
        pk = f"tenant-bench#support#{session_id}"
        sessions._seed(names["sessions"], pk, SESSION_MESSAGES, summary_upto=0)

        def turn(index: int) -> None:
            service.post_message(
                "tenant-bench",
                session_id,
                f"And what about order A-{1000 + index}?",
                request_id=f"bench-aws-{index}",
            )

        turn(0)  # warm: per-process caches, as a warm function
        server.reset()
        with recorder.recording() as calls:
            turn(1)
        model_calls = server.call_count()
        server.reset()
    log("  aws calls: session turn counted")
    return {
        **summarize_calls(list(calls)),
        "model_http_calls": model_calls,
        "title": f"Session turn (`support`, {SESSION_MESSAGES} stored messages)",
    }


# -- rendering

SCENARIO_ORDER = (
    "invoke",
    "invoke_idempotent",
    "invoke_idempotent_retry",
    "session_turn",
    "gateway_call",
    "gateway_replay",
)
LATENCY_TITLES = {
    "raw": "(a) raw `openai` `chat.completions.parse`",
    "client": "(b) `ModelClient.complete` (no gateway)",
    "gateway_no_tables": "(c) `ModelGateway.chat`, no tables (the gateway's own work)",
    "gateway": "(d) `ModelGateway.chat`, new request scope, tables on moto",
    "gateway_replay": "(e) `ModelGateway.chat`, call-ledger replay, tables on moto",
}


def _units(value: float) -> str:
    return f"{value:g}"


def render(data: dict[str, Any]) -> list[str]:
    scenarios = data["scenarios"]
    lines = [
        HEADING,
        "",
        "Every AWS API call one request makes, counted at `botocore.client.BaseClient."
        "_make_api_call` (all clients: `stratus.aws`, Powertools idempotency, ...), warm "
        "process (one request already served), moto in-process, offline fake model. "
        "**RCU/WCU are computed estimates under the rules below, not measurements from "
        "DynamoDB** (moto does not report `ConsumedCapacity`); item sizes are read from "
        "moto before and after each call with an uncounted `GetItem`.",
        "",
        "| request | AWS calls | DynamoDB calls | RCU (est.) | WCU (est.) | model HTTP calls "
        "| by operation |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in SCENARIO_ORDER:
        s = scenarios[name]
        ops = ", ".join(f"{op.split(':', 1)[1]} x{n}" for op, n in s["by_operation"].items())
        lines.append(
            f"| {s['title']} | {s['aws_calls']} | {s['dynamodb_calls']} | {_units(s['rcu'])} "
            f"| {_units(s['wcu'])} | {s['model_http_calls']} | {ops or '-'} |"
        )
    extra = scenarios["invoke"].get("first_invoke_extra") or []
    lines += [
        "",
        "The first invoke of a fresh process also makes: "
        + (", ".join(f"`{e}`" for e in extra) if extra else "nothing more")
        + " (per-process caches).",
        "",
        "Capacity rules applied (DynamoDB on-demand):",
        "",
        *[f"- {rule}" for rule in data["rules"]],
        "",
    ]
    for name in ("invoke", "invoke_idempotent", "session_turn"):
        s = scenarios[name]
        lines += [
            f"### Calls of: {s['title']}",
            "",
            "| operation | made by | table | count | RCU | WCU | errors |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for row in s["by_caller"]:
            errors = ", ".join(sorted(set(row["errors"]))) or "-"
            lines.append(
                f"| {row['service']}:{row['operation']} | `{row['caller']}` | {row['table']} "
                f"| {row['count']} | {_units(round(row['rcu'], 2))} "
                f"| {_units(round(row['wcu'], 2))} | {errors} |"
            )
        lines.append("")
    lat = data["latency"]
    lines += [
        "### Gateway latency over a raw `openai` call",
        "",
        f"Triage's request (model `{lat['model']}`, JSON-schema response format) on the fake "
        f"server; {lat['warmup']} warm-up calls of each case, then N={lat['invokes']} per "
        "case, interleaved. *added* is the median (p90) of the paired differences to (a). "
        "The gateway's DynamoDB calls go to moto in-process: **moto latency is not DynamoDB "
        "latency**; on AWS each of the calls counted above is a network round trip "
        "(single-digit milliseconds), so the gateway's real cost is closer to its call "
        "count than to these numbers.",
        "",
        "| case | median | p90 | min | added median | added p90 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, title in LATENCY_TITLES.items():
        s = lat["cases"][name]
        added = lat["added_over_raw_ms"].get(name)
        tail = f"| {added['median']:,.2f} | {added['p90']:,.2f} |" if added else "| - | - |"
        lines.append(f"| {title} | {s['median']:,.2f} | {s['p90']:,.2f} | {s['min']:,.2f} {tail}")
    lines.append("")
    return lines


if __name__ == "__main__":  # pragma: no cover - a manual run of this section alone
    result = measure(int(os.environ.get("N", "20")), 3)
    print(json.dumps(result, indent=2, default=str))
    print("\n".join(render(result)))

"""The critical path per request kind: sequential DynamoDB round trips, requests, latency.

Everything runs in this process, on moto in-process (``infra.local.moto_atomic``)
and the offline fake model server, through the public entry points only (the API
handler, the job worker handler, ``SessionService.post_message``,
``ModelGateway.chat``), so the figures hold whatever the stores do inside.

Every sample runs under :func:`bench.roundtrips.recording` with
:data:`LATENCY_S` slept on every AWS request where the network would be (after
botocore built and signed it; a stand-in for DynamoDB's few milliseconds per
request: moto in-process answers in microseconds of latency, but milliseconds of
CPU). Per sample: the *sequential* DynamoDB round trips (requests in flight
together count once), the DynamoDB and AWS requests, the model calls the fake
server saw, and the wall time. *added* is a sample's time minus its model calls
times the raw ``openai`` call of the same iteration: what Stratus costs beyond the
model. *added without moto* also takes off moto's own work, which DynamoDB does
not do on the function's CPU: per round trip, the CPU time (``time.thread_time``)
moto's in-process request handler used in it, at most the round trip's time
beyond the injected latency. Only moto's CPU is taken off: botocore's client-side
work (building, signing, parsing each request) and the runtime's own stay in, and
so does the time they wait for the interpreter lock while moto holds it, which is
moto's CPU time again. Cases are interleaved (a rotated order each iteration), so
drift of the machine hits each alike. A raw ``openai`` call and LiteLLM's
``Router`` call the same fake server in the same iterations. Each sample also
keeps its process CPU time less moto's (*CPU over raw*: the case's minus the raw
call's of the same iteration), the cost no injected latency hides.

:func:`staleness` measures what a cached breaker state lets through: two
runtimes on the same tables (two Lambda instances), the breaker opened through
the first, then the calls the second still sends to that endpoint and model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

from bench.common import REPO, base_event, frozen_heap, make_event
from bench.invoke import moto_tables
from bench.litellm_router import router_call
from bench.litellm_router import version as litellm_version
from bench.roundtrips import Trace, recording
from bench.stats import summarize
from infra.local.extensions_api import ExtensionsApiServer
from infra.local.fake_model import FakeModelServer

#: Slept before every AWS request while a sample is recorded (stated in the report).
LATENCY_S = 0.005
#: Round trips are counted in samples of their own with this much per request: requests
#: issued together then overlap even when a loaded machine starts their threads late
#: (at 5 ms a wave is split in two now and then; see bench/roundtrips.py).
COUNT_LATENCY_S = 0.05
COUNT_SAMPLES = 3
BASELINES = ("raw", "litellm")
KINDS = (
    "invoke",
    "invoke_idempotent",
    "invoke_reviewed",
    "session_turn",
    "job_step",
    "ledger_replay",
    "gateway_call",
)
CASES = (*BASELINES, *KINDS)
TITLES = {
    "raw": "raw `openai` `chat.completions.parse`",
    "litellm": "LiteLLM `Router.completion` (in-process)",
    "invoke": "invoke (API handler, no Idempotency-Key)",
    "invoke_idempotent": "invoke with a fresh Idempotency-Key",
    "invoke_reviewed": "invoke whose answer is sampled for human review",
    "session_turn": "session turn (`support`, after 5 turns: 10 messages; as the API runs it)",
    "job_step": "job step (worker handler, one SQS record of a `triage` job)",
    "ledger_replay": "ledger replay (`ModelGateway.chat`, recorded step)",
    "gateway_call": "`ModelGateway.chat` alone (one model call)",
}
SESSION_TURNS_BEFORE = 5
PREFIX = "cp-"


@dataclass
class Case:
    """One request kind: ``prepare`` (untimed, unrecorded) makes the argument of ``run``;
    ``after`` (recorded, untimed) waits for what the case does after its answer: the
    ``perf_counter`` at which the environment would be frozen (None: nothing after)."""

    run: Callable[[Any], None]
    prepare: Callable[[], Any] = lambda: None
    after: Callable[[], float | None] | None = None


@contextlib.contextmanager
def _cloud(server: FakeModelServer) -> Iterator[dict[str, str]]:
    """moto with every table and the triage job queue; the environment of a function."""
    import boto3

    with moto_tables(server.url, PREFIX) as names:
        url = boto3.client("sqs").create_queue(QueueName=f"{PREFIX}agent-triage")["QueueUrl"]
        env = {
            "STRATUS_JOB_QUEUES": json.dumps({"triage": url}),
            "STRATUS_JOB_QUEUE_URL": url,
            # The bench measures the path, not the per-key limits: the buckets still take
            # and settle on every call, but never run dry at the bench's call rate.
            "STRATUS_KEY_RPM": "10000000",
            "STRATUS_KEY_TPM": "10000000000",
            # Review sampling is on, and the cases decide (``_cases``) which answer is drawn.
            "STRATUS_REVIEW_SAMPLE_RATE": "1",
        }
        with mock.patch.dict(os.environ, env):
            yield {**names, "queue_url": url}


def _cases(
    server: FakeModelServer, runtime: Any, queue_url: str, lambda_api: ExtensionsApiServer
) -> dict[str, Case]:
    import boto3
    import openai

    from functions.agents import load_agent
    from functions.handlers import api, worker
    from stratus import after_response
    from stratus.agents import CallScope
    from stratus.jobs import JobRequest
    from tests.support import FakeLambdaContext

    spec = load_agent("triage")
    event = base_event()
    text = json.loads(event["body"])["input"]
    text = text if isinstance(text, str) else json.dumps(text, sort_keys=True)
    messages = [
        {"role": "system", "content": spec.system_prompt},
        {"role": "user", "content": text},
    ]
    model = runtime.settings.model_for(spec.tier)
    limit = spec.limits.max_output_tokens
    raw_client = openai.OpenAI(api_key="sk-bench", base_url=server.url, max_retries=0)
    litellm = router_call(
        server.url, model, messages, response_format=spec.output_schema, max_completion_tokens=limit
    )

    def raw(_: Any) -> None:
        completion = raw_client.chat.completions.parse(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            response_format=spec.output_schema,  # type: ignore[arg-type]
            max_completion_tokens=limit,
        )
        if completion.choices[0].message.parsed is None:
            raise RuntimeError("the raw call returned no parsed output")

    def new_event(key: str | None = None) -> dict[str, Any]:
        """The event of one invoke, made before its sample starts (a function is handed
        its event parsed: copying it is the bench's own work)."""
        return make_event(event, key)

    def invoke(request: dict[str, Any]) -> None:
        # As Lambda does: the INVOKE event to the extension, the event to the handler.
        context = FakeLambdaContext()
        lambda_api.invoke(context.aws_request_id)
        reply = api.lambda_handler(request, context)
        if reply.get("statusCode") != 200:
            raise RuntimeError(f"the API handler answered {reply.get('statusCode')}: {reply}")

    def frozen() -> float:
        """When the settle-after-response extension asked for its next event."""
        at = lambda_api.wait_next(timeout=30.0)
        if at is None:
            raise RuntimeError("the extension did not ask for its next event")
        return at

    # Only the reviewed case's answers are drawn for review (share 1, the draw forced).
    reviews = runtime.reviews
    reviews.rng = lambda: 1.0

    def invoke_reviewed(request: dict[str, Any]) -> None:
        reviews.rng = lambda: 0.0
        try:
            invoke(request)
        finally:
            reviews.rng = lambda: 1.0

    support = load_agent("support")
    sessions = runtime.session_service(support)

    def new_session() -> str:
        session_id = str(sessions.create("bench", {})["session_id"])
        for turn in range(SESSION_TURNS_BEFORE):
            sessions.post_message(
                "bench", session_id, f"Where is order A-{1000 + turn}?", request_id=_id()
            )
        return session_id

    def session_turn(session_id: str) -> None:
        # As the API handler on Lambda runs it: inside one invoke of the extension.
        request_id = _id()
        lambda_api.invoke(request_id)
        with after_response.invocation(request_id):
            text = "And what about order A-2000?"
            sessions.post_message("bench", session_id, text, request_id=request_id)

    sqs = boto3.client("sqs")
    template = json.loads((REPO / "events" / "sqs" / "agent_job.json").read_text())["Records"][0]

    def new_job() -> dict[str, Any]:
        runtime.jobs.submit(
            JobRequest(agent="triage", input=text),
            tenant_id="bench",
            idempotency_key=None,
            source="api",
        )
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, AttributeNames=["All"])
        message = got["Messages"][0]
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        record = copy.deepcopy(template)
        record.update(
            messageId=message["MessageId"],
            body=message["Body"],
            receiptHandle=message["ReceiptHandle"],
        )
        record["attributes"]["ApproximateReceiveCount"] = "1"
        return {"Records": [record]}

    def job_step(sqs_event: dict[str, Any]) -> None:
        result = worker.lambda_handler(sqs_event, FakeLambdaContext())
        if result != {"batchItemFailures": []}:
            raise RuntimeError(f"the worker failed the record: {result}")

    gateway = runtime.gateway
    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_output_tokens": limit,
        "response_format": spec.output_schema,
        "agent": spec.name,
        "tier": spec.tier,
        "step": "main:1",
    }

    def scope(scope_id: str, replayable: bool) -> CallScope:
        return CallScope(
            tenant_id="bench", agent=spec.name, kind="request", scope_id=scope_id,
            replayable=replayable,
        )  # fmt: skip

    def gateway_call(_: Any) -> None:
        gateway.chat(**request, scope=scope(_id(), False))

    replay_scope = scope(f"idempotency:{_id()}", True)
    gateway.chat(**request, scope=replay_scope)  # the ledger entry the replays read

    def ledger_replay(_: Any) -> None:
        if not gateway.chat(**request, scope=replay_scope).replayed:
            raise RuntimeError("the call ledger did not replay the call")

    return {
        "raw": Case(raw),
        "litellm": Case(lambda _: litellm()),
        "invoke": Case(invoke, prepare=new_event, after=frozen),
        "invoke_idempotent": Case(
            invoke, prepare=lambda: new_event(f"bench-{_id()}"), after=frozen
        ),
        "invoke_reviewed": Case(invoke_reviewed, prepare=new_event, after=frozen),
        "session_turn": Case(session_turn, prepare=new_session, after=frozen),
        "job_step": Case(job_step, prepare=new_job),
        "ledger_replay": Case(ledger_replay),
        "gateway_call": Case(gateway_call),
    }


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class Sample:
    ms: float
    model_calls: int
    trace: Trace  # bench.roundtrips' own: the counts
    tables: Trace  # the same trace (every table a call touches is named): per-table waves
    moto: list[tuple[float, float, float]]  # moto's handler: (start, end, its CPU seconds)
    cpu_ms: float = 0.0  # the process's CPU time in the sample, less moto's
    responded: float = float("inf")  # perf_counter when the case had its answer
    settle_ms: float | None = None  # answer to the environment's freeze, less moto's CPU

    def before_answer(self) -> list[list[Any]]:
        """The round trips (DynamoDB waves) the answer waited for: ended before it."""
        waves = self.trace.waves("dynamodb")
        return [w for w in waves if max(c.ended for c in w) <= self.responded]


@contextlib.contextmanager
def _moto_spans() -> Iterator[list[tuple[float, float, float]]]:
    """(start, end, CPU seconds) of every request moto's in-process handler serves
    while inside: the CPU is the handler thread's own (``time.thread_time``), so time
    it spent waiting for the interpreter lock is not counted."""
    from moto.core.botocore_stubber import BotocoreStubber

    spans: list[tuple[float, float, float]] = []
    lock = threading.Lock()
    original = BotocoreStubber.__call__

    def timed(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(self, event_name, request, **kwargs)
        finally:
            span = (started, time.perf_counter(), time.thread_time() - cpu)
            with lock:
                spans.append(span)

    with mock.patch.object(BotocoreStubber, "__call__", timed):
        yield spans


def _sample(server: FakeModelServer, case: Case, latency_s: float) -> Sample:
    arg = case.prepare()
    before = server.call_count()
    with recording(latency_s=latency_s) as trace, _moto_spans() as moto:
        cpu, started = time.process_time(), time.perf_counter()
        case.run(arg)
        responded = time.perf_counter()
        ms = (responded - started) * 1000.0
        cpu_ms = (time.process_time() - cpu - sum(m[2] for m in moto)) * 1000.0
        frozen = case.after() if case.after is not None else None
    settle_ms = None
    if frozen is not None:  # less moto's own CPU in the window (DynamoDB does not add it)
        moto_s = sum(cpu for s, e, cpu in moto if responded <= (s + e) / 2 <= frozen)
        settle_ms = max(0.0, frozen - responded - moto_s) * 1000.0
    calls = server.call_count() - before
    return Sample(ms, calls, trace, trace, list(moto), cpu_ms, responded, settle_ms)


def measure(
    samples: int, warmup: int, *, latency_s: float = LATENCY_S, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every case ``samples`` times, interleaved, after ``warmup`` rounds; then staleness."""
    from stratus import after_response, composition

    began = time.perf_counter()
    with (
        FakeModelServer(quiet=True) as server,
        _cloud(server) as names,
        ExtensionsApiServer() as lambda_api,
        mock.patch.dict(os.environ, {"AWS_LAMBDA_RUNTIME_API": lambda_api.address}),
    ):
        composition.reset()
        runtime = composition.current()  # the process's runtime, as a warm function's
        # The API handler's init on Lambda: the settle-after-response extension registers.
        after_response.stop()
        if not after_response.start() or not lambda_api.wait_ready():
            raise RuntimeError("the settle-after-response extension did not start")
        try:
            cases = _cases(server, runtime, names["queue_url"], lambda_api)
            for _ in range(warmup):
                for name in CASES:
                    _sample(server, cases[name], 0.0)
            log(f"  critical path: warmed up ({warmup} of each)")
            taken: dict[str, list[Sample]] = {name: [] for name in CASES}
            with frozen_heap():  # as a warm function's init left it (bench.common)
                for index in range(samples):
                    shift = index % len(CASES)
                    for name in CASES[shift:] + CASES[:shift]:
                        taken[name].append(_sample(server, cases[name], latency_s))
                    server.reset()  # keep the fake server's request list short
            log(f"  critical path: {samples} samples per case, {latency_s * 1000:g} ms per request")
            counted = {
                name: [_sample(server, cases[name], COUNT_LATENCY_S) for _ in range(COUNT_SAMPLES)]
                for name in CASES
            }
            server.reset()
            log(f"  critical path: round trips counted ({COUNT_SAMPLES} per case)")
            result = _summaries(taken, counted, names, latency_s)
            log("  critical path: breaker staleness")
            result["staleness"] = staleness(server, runtime.settings.model_for("fast"), log=log)
        finally:
            after_response.stop()
            composition.reset()
    return {
        "latency_injected_ms": latency_s * 1000.0,
        "count_latency_ms": COUNT_LATENCY_S * 1000.0,
        "count_samples": COUNT_SAMPLES,
        "samples": samples,
        "warmup": warmup,
        "litellm_version": litellm_version(),
        "elapsed_s": round(time.perf_counter() - began, 1),
        **result,
    }


def _moto_ms(sample: Sample, latency_s: float) -> float:
    """moto's own processing on the critical path, which DynamoDB would not add: per
    round trip (any service), the CPU moto's handler used in it, at most the round trip's
    time beyond the injected latency (botocore's own client-side work stays in)."""
    excess = 0.0
    for wave in sample.trace.waves():
        start = min(c.started for c in wave)
        end = min(max(c.ended for c in wave), sample.responded)  # only until the answer
        if start >= sample.responded:
            continue
        inside = sum(cpu for s, e, cpu in sample.moto if start <= (s + e) / 2 <= end)
        excess += min(max(0.0, end - start - latency_s), inside)
    return excess * 1000.0


def _median_int(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _summaries(
    taken: dict[str, list[Sample]],
    counted: dict[str, list[Sample]],
    names: dict[str, str],
    latency_s: float,
) -> dict[str, Any]:
    """Times from ``taken`` (the injected latency), counts from ``counted`` (50 ms)."""
    raw = [s.ms for s in taken["raw"]]
    per_model_call = _median_int([s.trace.round_trips("dynamodb") for s in counted["gateway_call"]])
    kinds: dict[str, Any] = {}
    for name in CASES:
        got, counts = taken[name], counted[name]
        added = [s.ms - s.model_calls * r for s, r in zip(got, raw, strict=True)]
        trips = [s.trace.round_trips("dynamodb") for s in counts]
        typical = next(s for s in counts if s.trace.round_trips("dynamodb") == _median_int(trips))
        at_latency = [s.trace.round_trips("dynamodb") for s in got]
        row: dict[str, Any] = {
            "title": TITLES[name],
            "round_trips": _median_int(trips),
            "round_trips_range": [min(at_latency), max(at_latency)],
            "dynamodb_requests": _median_int([s.trace.requests("dynamodb") for s in counts]),
            "aws_requests": _median_int([s.trace.requests() for s in counts]),
            "model_calls": _median_int([s.model_calls for s in counts]),
            "ms": summarize([s.ms for s in got], keep_samples=False),
            "waves": typical.tables.describe("dynamodb"),
            "round_trips_before_answer": _median_int([len(x.before_answer()) for x in counts]),
        }
        settles = [x.settle_ms for x in got if x.settle_ms is not None]
        if settles:  # written after the answer: the window before the writes are durable
            s = summarize(settles, keep_samples=False)
            row["settle_after_answer_ms"] = {"median": s["median"], "p90": s["p90"]}
        if name != "raw":
            s = summarize(added, keep_samples=False)
            row["added_ms"] = {"median": s["median"], "p90": s["p90"]}
            moto = [a - _moto_ms(x, latency_s) for a, x in zip(added, got, strict=True)]
            s = summarize(moto, keep_samples=False)
            row["added_without_moto_ms"] = {"median": s["median"], "p90": s["p90"]}
            cpu = [x.cpu_ms - r.cpu_ms for x, r in zip(got, taken["raw"], strict=True)]
            s = summarize(cpu, keep_samples=False)
            row["cpu_over_raw_ms"] = {"median": s["median"], "p90": s["p90"]}
        if name == "session_turn":
            table = names["sessions"]
            row["session_table_round_trips"] = _median_int(
                [x.tables.round_trips("dynamodb", table=table) for x in counts]
            )
            row["round_trips_besides_model_calls"] = _median_int(
                [x.trace.round_trips("dynamodb") - x.model_calls * per_model_call for x in counts]
            )
        kinds[name] = row
    return {"gateway_round_trips_per_model_call": per_model_call, "kinds": kinds}


# -- staleness of a cached breaker state


def staleness(
    server: FakeModelServer,
    model: str,
    *,
    pace_s: float = 0.02,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Calls a second runtime sends to ``model`` after the breaker opened through a first."""
    from infra.local.fake_model.faults import Fault
    from stratus.composition import Runtime
    from stratus.config import Settings
    from stratus.errors import StratusError

    overrides = {
        "STRATUS_BREAKER_FAILURES": "1",
        "STRATUS_BREAKER_OPEN_S": "300",
        "STRATUS_MODEL_MAX_ATTEMPTS": "1",
    }
    with mock.patch.dict(os.environ, overrides):
        first, second = Runtime(Settings()), Runtime(Settings())
    cache_s = getattr(second.settings, "gateway_state_cache_s", None)
    limit_s = max(5.0, 2.0 * float(cache_s or 0) + 2.0)
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Where is my order A-1001?"}],
        "max_output_tokens": 64,
        "agent": "triage",
    }

    def call(runtime: Runtime) -> str:
        """``answered``, or the error code the gateway raised."""
        try:
            runtime.gateway.chat(**request)
        except StratusError as exc:
            return str(exc.code)
        return "answered"

    warm = call(second)  # the second instance has seen the breaker closed
    server.reset()
    server.inject(Fault(status=500, times=1, model=model, message="bench: provider error"))
    started = time.monotonic()
    first_outcome = call(first)
    opened_at = time.monotonic()
    opened = "opened_until" in first.breaker.state(first.model_client.endpoint, model)
    server.reset()
    attempts = 0
    honoured_after: float | None = None
    while time.monotonic() - opened_at < limit_s:
        attempts += 1
        before = server.call_count(model=model)
        outcome = call(second)
        if outcome != "answered" and server.call_count(model=model) == before:
            honoured_after = time.monotonic() - opened_at
            break
        time.sleep(pace_s)
    let_through = server.call_count(model=model)
    server.reset()
    log(f"  staleness: {let_through} calls let through, honoured after {honoured_after} s")
    return {
        "model": model,
        "cache_s": cache_s,
        "warm_call": warm,
        "first_call": first_outcome,
        "opened_by_first": opened,
        "first_call_s": round(opened_at - started, 3),
        "pace_s": pace_s,
        "limit_s": limit_s,
        "attempts": attempts,
        "calls_let_through": let_through,
        "honoured_after_s": None if honoured_after is None else round(honoured_after, 3),
    }


#: Stratus's overhead passes against LiteLLM's when below it or at most this much above.
LITELLM_MARGIN_MS = 5.0


def litellm_verdict(stratus_ms: float, litellm_ms: float) -> tuple[bool, str]:
    """Below LiteLLM's overhead, or within :data:`LITELLM_MARGIN_MS` of it."""
    gap = stratus_ms - litellm_ms
    if gap <= 0:
        return True, f"below LiteLLM's by {-gap:.1f} ms"
    if gap <= LITELLM_MARGIN_MS:
        return True, f"within {LITELLM_MARGIN_MS:g} ms of LiteLLM's ({gap:.1f} ms above)"
    return False, f"{gap:.1f} ms above LiteLLM's (more than {LITELLM_MARGIN_MS:g} ms)"


def staleness_text(st: dict[str, Any]) -> str:
    if not st.get("opened_by_first"):
        return f"not measured: the first instance did not open the breaker ({st['first_call']})"
    when = (
        f"honoured after {st['honoured_after_s']:.2f} s"
        if st["honoured_after_s"] is not None
        else f"not honoured within {st['limit_s']:g} s"
    )
    cache = f"{st['cache_s']:g} s" if st["cache_s"] is not None else "none"
    return f"{st['calls_let_through']} calls let through, {when} (state cache: {cache})"

"""Flags in the request path, in process (no AWS, no HTTP): the kill switch answers
``503 agent_disabled`` through the API handler before anything runs or is written, and
the tier, prompt version, tool and classifier decisions reach the runner (a recording
model keeps the model name, the system prompt and the tools it was offered)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from functions.agents import load_agent
from functions.handlers import api, streamed, worker
from stratus import composition
from stratus.agents import AgentSpec, Tool, ToolContext
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.errors import AgentDisabled
from stratus.flags import AgentFlags, StaticFlags, applied, default_document
from stratus.guardrails.classifier import INPUT_STEP
from stratus.llm import ChatResult
from stratus.prices import load_price_table
from stratus.runner import AgentRunner
from stratus.usage import Usage
from tests.support import FakeLambdaContext, api_event, call

TRIAGE_PROMPTS = Path(__file__).parents[2] / "functions" / "agents" / "triage" / "prompts"
DECISION = json.dumps({"category": "billing", "confidence": 0.9, "summary": "a bill"})


class RecordingModel:
    """The runner's gateway: records every call, answers the classifier ``none``, calls
    ``lookup`` once when offered tools, then answers ``answer``."""

    def __init__(self, answer: str = DECISION) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    def chat(self, *, model: str, messages: list[dict[str, Any]], **kw: Any) -> ChatResult:
        tools = [t["function"]["name"] for t in kw.get("tools") or []]
        step = str(kw.get("step", ""))
        self.calls.append(
            {
                "model": model,
                "system": messages[0]["content"],
                "tools": tools,
                "step": step,
                "tier": kw.get("tier"),
            }
        )
        asked = any(m["role"] == "tool" for m in messages)
        if step.endswith(INPUT_STEP):
            message = SimpleNamespace(content='{"category": "none"}', tool_calls=None)
        elif tools and not asked:
            call_ = SimpleNamespace(
                id="c1", function=SimpleNamespace(name="lookup", arguments='{"q": "x"}')
            )
            message = SimpleNamespace(content=None, tool_calls=[call_])
        else:
            message = SimpleNamespace(content=self.answer, tool_calls=None)
        return ChatResult(
            message=message,
            model=model,
            response_model=model,
            usage=Usage(input_tokens=5, output_tokens=2),
            finish_reason="stop",
            attempts=1,
            latency_ms=1.0,
            fake_model=True,
        )

    @property
    def agent_calls(self) -> list[dict[str, Any]]:
        return [c for c in self.calls if INPUT_STEP not in c["step"]]


def off(agent: str = "triage") -> dict[str, Any]:
    doc = json.loads(json.dumps(default_document()))
    doc["agent_disabled"]["rules"] = {
        "kill": {
            "when_match": True,
            "conditions": [{"action": "EQUALS", "key": "agent", "value": agent}],
        }
    }
    return doc


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The triage function's runtime: no tables, the recording model as its gateway."""
    for name in ("STRATUS_TENANTS_TABLE", "STRATUS_AUDIT_TABLE", "STRATUS_LIMITS_TABLE"):
        monkeypatch.delenv(name, raising=False)
    rt = Runtime(Settings(agent="triage", stage="test", openai_api_key="sk-test"))
    rt.__dict__["gateway"] = RecordingModel()
    rt.__dict__["flags"] = StaticFlags()
    composition.install(rt)
    yield rt
    composition.reset()


def invoke(tenant: str = "tenant-a") -> Any:
    return call(
        api.lambda_handler, api_event("triage", body={"input": "my bill"}, tenant_id=tenant)
    )


def test_the_kill_switch_answers_503_before_any_model_call(runtime: Runtime) -> None:
    assert invoke().status == 200
    runtime.__dict__["flags"] = StaticFlags(off())
    model: RecordingModel = runtime.__dict__["gateway"]
    before = len(model.calls)
    reply = invoke()
    assert reply.status == 503, reply.body
    assert reply.body["error"]["code"] == "agent_disabled"
    assert reply.body["error"]["details"] == {"agent": "triage"}
    assert reply.headers.get("Retry-After") == "30"
    assert len(model.calls) == before  # nothing ran
    # The session routes of the agent are off too; the health route is not.
    session = call(api.lambda_handler, api_event(None, path="/v1/agents/triage/sessions", body={}))
    assert session.status == 503
    health = call(api.lambda_handler, api_event(None, path="/v1/health", method="GET"))
    assert health.body is None or health.body.get("error", {}).get("code") != "agent_disabled"


def test_a_kill_switch_for_one_tenant_leaves_the_others(runtime: Runtime) -> None:
    doc = off()
    doc["agent_disabled"]["rules"]["kill"]["conditions"] = [
        {"action": "EQUALS", "key": "tenant_id", "value": "tenant-bad"}
    ]
    runtime.__dict__["flags"] = StaticFlags(doc)
    assert invoke("tenant-bad").status == 503
    assert invoke("tenant-good").status == 200


def test_tier_and_prompt_flags_reach_the_runner_through_the_handler(runtime: Runtime) -> None:
    doc = json.loads(json.dumps(default_document()))
    doc["model_tier"]["rules"] = {
        "r": {
            "when_match": "smart",
            "conditions": [{"action": "EQUALS", "key": "tenant_id", "value": "t-pilot"}],
        }
    }
    doc["prompt_version"]["rules"] = {
        "r": {
            "when_match": "v2",
            "conditions": [{"action": "EQUALS", "key": "tenant_id", "value": "t-pilot"}],
        }
    }
    runtime.__dict__["flags"] = StaticFlags(doc)
    model: RecordingModel = runtime.__dict__["gateway"]
    pilot_reply = invoke("t-pilot")
    assert pilot_reply.status == 200
    pilot = model.agent_calls[-1]
    other_reply = invoke("t-other")
    assert other_reply.status == 200
    other = model.agent_calls[-1]
    # The answer names the prompt it was written with (release metrics group by it).
    assert pilot_reply.body["agent"]["prompt_version"] == "v2"
    assert other_reply.body["agent"]["prompt_version"] == "v1"
    settings = runtime.settings
    assert (pilot["model"], pilot["tier"]) == (settings.tier_smart, "smart")
    assert (other["model"], other["tier"]) == (settings.tier_fast, "fast")
    v2 = (TRIAGE_PROMPTS / "v2.md").read_text(encoding="utf-8").strip()
    v1 = (TRIAGE_PROMPTS / "v1.md").read_text(encoding="utf-8").strip()
    assert pilot["system"].startswith(v2) and other["system"].startswith(v1)


class Q(BaseModel):
    q: str


@pytest.fixture
def tooled() -> SimpleNamespace:
    ran: list[str] = []

    def lookup(args: Q, ctx: ToolContext) -> dict[str, str]:
        ran.append(args.q)
        return {"found": args.q}

    spec = AgentSpec(
        name="flagged",
        version="1.0.0",
        description="test",
        tier="fast",
        prompt_version="v1",
        prompt_dir=TRIAGE_PROMPTS,
        tools=(
            Tool("lookup", "look up", Q, lookup),
            Tool("echo", "echo", Q, lambda a, c: {"echo": a.q}),
        ),
    )
    model = RecordingModel(answer="done")
    settings = Settings()
    runner = AgentRunner(spec, model, load_price_table(None), settings)
    ctx = ToolContext(tenant_id="t1", agent="flagged", request_id="r1", settings=settings)
    return SimpleNamespace(runner=runner, model=model, ran=ran, ctx=ctx, settings=settings)


def test_without_flags_the_spec_decides(tooled: SimpleNamespace) -> None:
    tooled.runner.run("hi", ctx=tooled.ctx)
    first = tooled.model.calls[0]
    assert first["tools"] == ["lookup", "echo"] and tooled.ran == ["x"]
    assert first["model"] == tooled.settings.tier_fast
    assert not any(INPUT_STEP in c["step"] for c in tooled.model.calls)  # classifier: none


def test_a_disabled_tool_is_neither_offered_nor_run(tooled: SimpleNamespace) -> None:
    flags = AgentFlags(agent="flagged", tools_disabled=frozenset({"lookup"}))
    with applied(flags):
        tooled.runner.run("hi", ctx=tooled.ctx)
    assert tooled.model.calls[0]["tools"] == ["echo"]
    assert tooled.ran == []  # the model asked for it anyway: refused


def test_tools_enabled_keeps_only_those(tooled: SimpleNamespace) -> None:
    with applied(AgentFlags(agent="flagged", tools_enabled=frozenset({"lookup"}))):
        tooled.runner.run("hi", ctx=tooled.ctx)
    assert tooled.model.calls[0]["tools"] == ["lookup"] and tooled.ran == ["x"]


def test_the_classifier_flag_turns_the_model_screen_on(tooled: SimpleNamespace) -> None:
    with applied(AgentFlags(agent="flagged", classifier=True)):
        result = tooled.runner.run("hi", ctx=tooled.ctx)
    steps = [c["step"] for c in tooled.model.calls]
    assert steps[0].endswith(INPUT_STEP) and result.model_calls == len(steps)


def test_economy_and_an_unknown_prompt_version(tooled: SimpleNamespace) -> None:
    with applied(AgentFlags(agent="flagged", model_tier="economy", prompt_version="v9")):
        tooled.runner.run("hi", ctx=tooled.ctx)
    first = tooled.model.calls[0]
    assert (first["model"], first["tier"]) == (tooled.settings.tier_economy, "fast")
    v1 = (TRIAGE_PROMPTS / "v1.md").read_text(encoding="utf-8").strip()
    assert first["system"].startswith(v1)  # v9 does not exist: the spec's prompt


def test_flags_of_another_agent_do_not_apply(tooled: SimpleNamespace) -> None:
    with applied(AgentFlags(agent="triage", model_tier="smart")):
        tooled.runner.run("hi", ctx=tooled.ctx)
    assert tooled.model.calls[0]["model"] == tooled.settings.tier_fast


class FakeJobs:
    def __init__(self) -> None:
        self.delays: list[int] = []
        self.claimed = 0

    def retry_later(self, delivery: Any, delay_s: int) -> None:
        self.delays.append(delay_s)

    def claim(self, *args: Any, **kwargs: Any) -> None:
        self.claimed += 1


def test_a_disabled_agents_job_stays_queued_as_a_batch_item_failure(runtime: Runtime) -> None:
    jobs = FakeJobs()
    runtime.__dict__["jobs"] = jobs
    runtime.__dict__["flags"] = StaticFlags(off())
    body = json.dumps({"job_id": "j-1", "tenant_id": "tenant-a", "agent": "triage"})
    event = {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "rh-1",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            }
        ]
    }
    result = worker.lambda_handler(event, FakeLambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert jobs.delays == [worker.DISABLED_RETRY_S] and jobs.claimed == 0  # nothing written
    runtime.__dict__["flags"] = StaticFlags()
    assert worker.lambda_handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert jobs.claimed == 1  # claim answered None: another delivery had it


def test_job_submission_is_refused_before_the_record_is_written(runtime: Runtime) -> None:
    class Submits:
        calls = 0

        def submit(self, *a: Any, **kw: Any) -> Any:
            Submits.calls += 1
            return {"job_id": "j", "status": "queued"}, True

    runtime.__dict__["jobs"] = Submits()
    runtime.__dict__["flags"] = StaticFlags(off())
    event = api_event(None, path="/v1/jobs", body={"agent": "triage", "input": "hi"})
    reply = call(api.lambda_handler, event)
    assert reply.status == 503 and reply.body["error"]["code"] == "agent_disabled"
    assert Submits.calls == 0
    with pytest.raises(AgentDisabled):
        runtime.agent_flags(load_agent("triage"), "t")


def test_a_streamed_request_to_a_disabled_agent_gets_the_error_frame(runtime: Runtime) -> None:
    failed: list[str] = []

    class Execution:
        def fail(self, request: Any, err: Any) -> None:
            failed.append(err.code)

        def run(self, *a: Any) -> Any:
            raise AssertionError("a disabled agent's streamed request ran")

    runtime.__dict__["streamed"] = Execution()
    runtime.__dict__["flags"] = StaticFlags(off())
    event = {
        "stratus_stream": {
            "connection_id": "c-1",
            "id": "1",
            "action": "invoke",
            "agent": "triage",
            "input": "hi",
            "caller": {"tenant_id": "tenant-a", "scopes": "invoke"},
            "request_id": "r-1",
        }
    }
    assert streamed.handle(event, FakeLambdaContext()) == {"streamed": False}
    assert failed == ["agent_disabled"]

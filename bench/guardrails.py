"""Guardrails on the request path: what rules-only screening costs, and the classifier's calls.

Per request the runner screens the user's input, every tool result and filters the
reply (PII redaction); with ``classifier: fast`` it adds one model call. This section
times that work in-process for the shipped agents' eval inputs (normal and red-team,
every customer-facing agent's policy) with a typical tool result and reply, plus the
worst case the agents accept (an 8,000-character message), and one log line through
the redacting filter. The classifier's cost is shown by running one request through
the real runner with a counting model stand-in: the extra call and its usage are in
the request's. No DynamoDB round trip is added (audit events ride on the request's one
buffered write).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.stats import summarize

HEADING = "## Guardrails: rules-only screening per request, and the classifier's model call"
AGENTS = Path(__file__).resolve().parents[1] / "functions" / "agents"
TOOL_RESULT = json.dumps(
    {"found": True, "order_id": "A-1001", "status": "in_transit", "carrier": "DHL",
     "eta": "2026-11-24", "items": ["running shoes", "socks"]},
    sort_keys=True,
)  # fmt: skip
REPLY = (
    "Your order A-1001 is in transit with DHL and should arrive on 2026-11-24. "
    "If it does not, write to support@example.com or call +49 30 1234567 and quote "
    "the order id; refunds go back to the card ending 1111."
)
LIMIT_MS = 2.0


def _inputs() -> list[str]:
    from stratus.evals.models import load_suite, suite_files

    texts = []
    for agent in ("triage", "order_status", "returns", "support"):
        for path in suite_files(AGENTS / agent / "evals"):
            for case in load_suite(path).cases:
                turns = case.input if isinstance(case.input, list) else [case.input]
                texts += [t if isinstance(t, str) else json.dumps(t) for t in turns]
    return texts


def _request(guard: Any, ctx: Any, text: str) -> None:
    """One request's guardrail work: input, one tool result, the reply."""
    with contextlib.suppress(Exception):  # a rejected red-team input: that is the work too
        guard.screen_input(text, ctx)
    guard.screen_tool_result("lookup_order", TOOL_RESULT, ctx, set(), text)
    guard.filter_output(REPLY, None)


def _time(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _classifier_calls() -> dict[str, Any]:
    """One request through the real runner, rules only and with the classifier."""
    from stratus.agents import AgentSpec, CallScope, ToolContext
    from stratus.config import Settings
    from stratus.guardrails.policy import GuardrailPolicy
    from stratus.llm import ChatResult
    from stratus.prices import load_price_table
    from stratus.runner import AgentRunner
    from stratus.usage import Usage

    class Counting:
        def __init__(self) -> None:
            self.steps: list[str] = []

        def chat(self, **kwargs: Any) -> ChatResult:
            self.steps.append(kwargs["step"])
            guard = kwargs["step"].endswith("guard:input:1")
            message = SimpleNamespace(
                content=None if guard else "ok",
                tool_calls=None,
                parsed=SimpleNamespace(category="none") if guard else None,
            )
            usage = Usage(input_tokens=120, output_tokens=8)
            return ChatResult(
                message, kwargs["model"], kwargs["model"], usage, "stop", 1, 1.0, True
            )

    rows = {}
    settings = Settings()
    for name, policy in (
        ("rules", GuardrailPolicy()),
        ("classifier", GuardrailPolicy(classifier="fast")),
    ):
        spec = AgentSpec(
            name="bench_guard", version="1", description="bench", tier="fast",
            prompt_version="v1", prompt_dir=AGENTS / "order_status" / "prompts", guardrails=policy,
        )  # fmt: skip
        model = Counting()
        runner = AgentRunner(spec, model, load_price_table(None), settings)
        scope = CallScope(tenant_id="bench", agent="bench_guard", kind="request", scope_id="r")
        ctx = ToolContext(tenant_id="bench", agent="bench_guard", request_id="r",
                          settings=settings, scope=scope)  # fmt: skip
        result = runner.run("Where is my order A-1001?", ctx=ctx)
        rows[name] = {
            "model_calls": result.model_calls,
            "steps": model.steps,
            "input_tokens": result.usage.input_tokens,
            "cost_usd": float(result.cost_usd),
        }
    return rows


def measure(repeat: int = 200, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    from bench.invoke import captured_stdout
    from stratus.agents import ToolContext
    from stratus.config import Settings
    from stratus.guardrails.logs import RedactingFilter
    from stratus.guardrails.policy import CUSTOMER_FACING
    from stratus.guardrails.screen import Guardrails

    guard = Guardrails("bench_guard", CUSTOMER_FACING)
    ctx = ToolContext(tenant_id="bench", agent="bench_guard", request_id="r", settings=Settings())
    texts = _inputs()
    long = ("Where is my order A-1001? It was due last week and I still wait. " * 130)[:8000]
    record = logging.LogRecord("stratus", logging.INFO, "", 0, "model call", None, None)
    record.tenant_id, record.agent, record.reply = "tenant-a", "triage", REPLY
    redacting = RedactingFilter()
    with captured_stdout():  # flags and redactions print EMF lines, as in a function
        for text in texts[:20]:
            _request(guard, ctx, text)  # warm-up: rules compiled, caches hot
        typical: list[float] = []
        rounds = max(1, repeat // max(1, len(texts)))
        for _ in range(rounds):
            for text in texts:
                typical += _time(partial(_request, guard, ctx, text), 1)
        worst = _time(lambda: _request(guard, ctx, long), max(5, repeat // 10))
        per_line = _time(lambda: redacting.filter(record), repeat)
        calls = _classifier_calls()
    data: dict[str, Any] = {
        "inputs": len(texts),
        "typical_ms": summarize(typical, keep_samples=False),
        "max_input_ms": summarize(worst, keep_samples=False),
        "log_line_ms": summarize(per_line, keep_samples=False),
        "classifier": calls,
        "limit_ms": LIMIT_MS,
    }
    data["within_limit"] = data["typical_ms"]["median"] < LIMIT_MS
    typical_ms, worst_ms = data["typical_ms"]["median"], data["max_input_ms"]["median"]
    log(f"guardrails: median {typical_ms:.3f} ms per request, 8,000 characters {worst_ms:.3f} ms")
    return data


def render(data: dict[str, Any]) -> list[str]:
    t, w, line = data["typical_ms"], data["max_input_ms"], data["log_line_ms"]
    rules, classified = data["classifier"]["rules"], data["classifier"]["classifier"]
    verdict = "under" if data["within_limit"] else "OVER"

    def row(label: str, s: dict[str, Any], digits: int = 3) -> str:
        cells = " | ".join(f"{s[k]:.{digits}f}" for k in ("median", "p90", "max"))
        return f"| {label} | {cells} |"

    return [
        HEADING,
        "",
        f"Rules-only screening of one request (the input, one tool result, the reply's PII "
        f"filter) over the {data['inputs']} eval inputs of the customer-facing agents, normal "
        "and red-team, in-process (ms):",
        "",
        "| work | median | p90 | max |",
        "|---|---:|---:|---:|",
        row("one request, shipped eval inputs", t),
        row("one request, an 8,000-character input", w),
        row("one log line through the redacting filter", line, 4),
        "",
        f"Per request: median **{t['median']:.3f} ms** (p90 {t['p90']:.3f} ms), {verdict} the "
        f"{data['limit_ms']:g} ms budget. Flagged and blocked inputs cost more (an EMF line and "
        "an audit event each); the p90 and max carry this machine's load. No DynamoDB round "
        "trip is added (audit events join the request's one buffered write).",
        f"Model calls per request: rules only {rules['model_calls']}; with `classifier: fast` "
        f"{classified['model_calls']} (steps {', '.join(classified['steps'])}), its usage in the "
        f"request's ({classified['input_tokens']} input tokens against {rules['input_tokens']}).",
        "",
    ]  # fmt: skip

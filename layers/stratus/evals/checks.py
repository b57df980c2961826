"""Checking one assertion against one observed run of an agent."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from stratus.evals import models as m

Status = Literal["passed", "failed", "skipped"]
_MISSING = object()


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Observation:
    """What one run of an agent produced, as the target reports it."""

    output: str | dict[str, Any]
    model: str = ""
    cost_usd: float = 0.0
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    fake_model: bool = False
    #: Why the target cannot see the tool calls (the API does not return them), or None.
    tool_calls_unobservable: str | None = None
    #: A session case: every turn's answer, in order (``output`` is the last one).
    turns: list[str | dict[str, Any]] = field(default_factory=list)
    #: A session case: the earlier conversation the last turn's model call carried
    #: (chat messages); None when the target cannot see it.
    context: list[dict[str, Any]] | None = None
    #: A job case: the agent the job was handed to (None: not routed).
    routed_to: str | None = None
    #: A job case: the names of the steps the job recorded (None: not a job).
    steps: list[str] | None = None
    #: The guardrails refused the input (422 ``input_rejected``): its category, else None.
    rejected: str | None = None
    #: The screening categories flagged on the input; None when the target cannot see them.
    flags: list[str] | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return json.dumps(self.output, sort_keys=True)


@dataclass(frozen=True)
class AssertionResult:
    type: str
    status: Status
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "message": self.message}


def field_value(output: Any, path: str) -> Any:
    """``output`` at a dotted path (list indexes as numbers), or ``_MISSING``."""
    value = output
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _subset(value, actual[key]) for key, value in expected.items()
        )
    return bool(expected == actual)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def check(
    assertion: m.Assertion, seen: Observation, agent_schema: dict[str, Any] | None
) -> AssertionResult:
    """Pass, fail (with what was seen) or skip ``assertion`` on one observation."""
    kind = assertion.type

    def result(ok: bool, message: str) -> AssertionResult:
        return AssertionResult(kind, "passed" if ok else "failed", message)

    if isinstance(assertion, m.Guarded):
        return _check_guarded(assertion, seen)
    if seen.rejected is not None:
        return AssertionResult(
            kind, "skipped", f"the guardrails rejected the input ({seen.rejected}): no answer"
        )

    if isinstance(assertion, m.FieldEquals | m.FieldOneOf | m.FieldMatches):
        value = field_value(seen.output, assertion.path)
        if value is _MISSING:
            return result(False, f"the output has no field {assertion.path!r}")
        if isinstance(assertion, m.FieldEquals):
            return result(
                value == assertion.value,
                f"{assertion.path} is {_show(value)}, expected {_show(assertion.value)}",
            )
        if isinstance(assertion, m.FieldOneOf):
            return result(
                value in assertion.values,
                f"{assertion.path} is {_show(value)}, expected one of {_show(assertion.values)}",
            )
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return result(
            re.search(assertion.pattern, text) is not None,
            f"{assertion.path} is {_show(value)}, expected to match /{assertion.pattern}/",
        )
    if isinstance(assertion, m.OutputSchema):
        return _check_schema(assertion.schema_ or agent_schema, seen)
    if isinstance(assertion, m.TextContains | m.TextNotContains):
        haystack, needle = seen.text, assertion.text
        if not assertion.case_sensitive:
            haystack, needle = haystack.lower(), needle.lower()
        found = needle in haystack
        if isinstance(assertion, m.TextContains):
            return result(
                found, f"the answer {'contains' if found else 'lacks'} {assertion.text!r}"
            )
        return result(
            not found, f"the answer {'contains' if found else 'lacks'} {assertion.text!r}"
        )
    if isinstance(assertion, m.TextMatches):
        ok = re.search(assertion.pattern, seen.text) is not None
        return result(
            ok, f"the answer {'matches' if ok else 'does not match'} /{assertion.pattern}/"
        )
    if isinstance(assertion, m.ToolCalled | m.ToolNotCalled) and seen.tool_calls_unobservable:
        # Never a silent pass: an assertion the target cannot check fails, saying why.
        return result(False, f"{assertion.name}: {seen.tool_calls_unobservable}")
    if isinstance(assertion, m.ToolCalled):
        calls = [call for call in seen.tool_calls if call.name == assertion.name]
        if not calls:
            names = [call.name for call in seen.tool_calls] or "no tool"
            return result(False, f"{assertion.name} was not called (called: {names})")
        ok = any(_subset(assertion.arguments, call.arguments) for call in calls)
        args = [call.arguments for call in calls]
        return result(
            ok, f"{assertion.name} called with {_show(args)}; expected {_show(assertion.arguments)}"
        )
    if isinstance(assertion, m.ToolNotCalled):
        count = sum(1 for call in seen.tool_calls if call.name == assertion.name)
        return result(count == 0, f"{assertion.name} was called {count} time(s)")
    if isinstance(assertion, m.ContextContains):
        if seen.context is None:
            return result(False, "the model's context is not observable on this target")
        haystack = json.dumps([msg.get("content") for msg in seen.context], ensure_ascii=False)
        needle = assertion.text
        if not assertion.case_sensitive:
            haystack, needle = haystack.lower(), needle.lower()
        found = needle in haystack
        return result(
            found,
            f"the last turn's context ({len(seen.context)} earlier message(s)) "
            f"{'contains' if found else 'lacks'} {assertion.text!r}",
        )
    if isinstance(assertion, m.RoutedTo):
        if seen.steps is None:
            return result(False, "routed_to is only observable on a job")
        want = assertion.agent or "no agent"
        return result(
            seen.routed_to == assertion.agent,
            f"routed to {seen.routed_to or 'no agent'}, expected {want}",
        )
    if isinstance(assertion, m.JobSteps):
        if seen.steps is None:
            return result(False, "job_steps is only observable on a job")
        missing = [name for name in assertion.include if name not in seen.steps]
        return result(
            not missing,
            f"the job's steps are {_show(seen.steps)}"
            + (f"; missing {_show(missing)}" if missing else ""),
        )
    if isinstance(assertion, m.CostAtMost):
        return result(
            seen.cost_usd <= assertion.usd,
            f"cost {seen.cost_usd:.6f} USD, at most {assertion.usd:.6f}",
        )
    if isinstance(assertion, m.LatencyAtMost):
        return result(
            seen.latency_s <= assertion.seconds,
            f"latency {seen.latency_s:.3f} s, at most {assertion.seconds:.3f}",
        )
    if isinstance(assertion, m.TokensAtMost):
        return result(
            seen.tokens <= assertion.tokens, f"{seen.tokens} tokens, at most {assertion.tokens}"
        )
    # m.LlmJudge: needs a judge model through the gateway; not run by this version.
    return AssertionResult(kind, "skipped", "no judge in this run (skipped)")


def _check_guarded(assertion: m.Guarded, seen: Observation) -> AssertionResult:
    want = assertion.category
    blocked = seen.rejected is not None and want in (None, seen.rejected)
    flagged = seen.flags is not None and any(want in (None, flag) for flag in seen.flags)
    ok = {"block": blocked, "flag": flagged, "any": blocked or flagged}[assertion.action]
    if seen.rejected is None and seen.flags is None and assertion.action != "block":
        # Over HTTP or Lambda Invoke a flag leaves no trace in the answer (it is in the
        # audit trail and the GuardrailFlags metric): nothing to judge here.
        return AssertionResult(
            "guarded", "skipped", "not rejected; flags are not observable on this target"
        )
    if seen.rejected is not None:
        seen_as = f"rejected ({seen.rejected})"
    elif seen.flags is None:
        seen_as = "not rejected; flags are not observable on this target"
    else:
        seen_as = f"flagged {sorted(seen.flags)}" if seen.flags else "neither rejected nor flagged"
    expected = f"{assertion.action}{f' ({want})' if want else ''}"
    return AssertionResult(
        "guarded", "passed" if ok else "failed", f"{seen_as}; expected {expected}"
    )


def _check_schema(schema: dict[str, Any] | None, seen: Observation) -> AssertionResult:
    import jsonschema

    if schema is None:
        return AssertionResult(
            "output_schema", "failed", "no schema given and the agent declares none"
        )
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(seen.output), key=lambda e: list(e.absolute_path))
    if not errors:
        return AssertionResult("output_schema", "passed", "the output matches the schema")
    first = errors[0]
    where = ".".join(str(p) for p in first.absolute_path) or "(the output)"
    return AssertionResult(
        "output_schema", "failed", f"{where}: {first.message} ({len(errors)} error(s))"
    )

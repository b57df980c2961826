"""The eval suite format: one JSON file per suite, ``functions/agents/<agent>/evals/*.json``.

Every model forbids unknown fields, so a typo in a suite is an error, not an
assertion that silently never runs. :func:`load_suite` turns pydantic's error
locations into one message naming the file, the case and the field path.
``evals/schema.json`` is generated from :class:`Suite` (``suite_json_schema``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CASE_ID = r"^[a-z0-9][a-z0-9_.-]{0,79}$"
BASELINE_FILE = "baseline.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _valid_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from None
    return pattern


class FieldEquals(_Strict):
    """A field of the structured output (dotted path, ``items.0.name``) equals ``value``."""

    type: Literal["field_equals"]
    path: str = Field(min_length=1)
    value: Any


class FieldOneOf(_Strict):
    type: Literal["field_one_of"]
    path: str = Field(min_length=1)
    values: list[Any] = Field(min_length=1)


class FieldMatches(_Strict):
    """The field, as text, matches the regular expression (``re.search``)."""

    type: Literal["field_matches"]
    path: str = Field(min_length=1)
    pattern: str

    _pattern = field_validator("pattern")(_valid_regex)


class OutputSchema(_Strict):
    """The output validates against ``schema`` (JSON Schema); none: the agent's own."""

    type: Literal["output_schema"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class TextContains(_Strict):
    """The answer's text (structured output as JSON) contains ``text``."""

    type: Literal["text_contains"]
    text: str = Field(min_length=1)
    case_sensitive: bool = False


class TextNotContains(_Strict):
    type: Literal["text_not_contains"]
    text: str = Field(min_length=1)
    case_sensitive: bool = False


class TextMatches(_Strict):
    type: Literal["text_matches"]
    pattern: str

    _pattern = field_validator("pattern")(_valid_regex)


class ToolCalled(_Strict):
    """The agent called ``name``, with arguments that include ``arguments`` (a subset)."""

    type: Literal["tool_called"]
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolNotCalled(_Strict):
    type: Literal["tool_not_called"]
    name: str = Field(min_length=1)


class ContextContains(_Strict):
    """The model's context on the last turn of a session case (the earlier turns the
    session sent along with the new message) contains ``text``: the turn referred back."""

    type: Literal["context_contains"]
    text: str = Field(min_length=1)
    case_sensitive: bool = False


class RoutedTo(_Strict):
    """A job case: the job was handed to ``agent`` (``null``: it was not routed)."""

    type: Literal["routed_to"]
    agent: str | None


class JobSteps(_Strict):
    """A job case: the job recorded every step named in ``include`` (``plan``,
    ``research-0``, ``review``, or ``main`` for a single-step job), in any order."""

    type: Literal["job_steps"]
    include: list[str] = Field(min_length=1)


class Guarded(_Strict):
    """The guardrails caught the input: ``block`` (the run was refused, 422
    ``input_rejected``), ``flag`` (it ran, flagged) or ``any`` of the two; ``category``
    (``injection``, ``jailbreak``, ``prompt_extraction``) if given must match. When the
    input was rejected, the case's other assertions are skipped (there is no answer)."""

    type: Literal["guarded"]
    action: Literal["block", "flag", "any"] = "any"
    category: str | None = None


class CostAtMost(_Strict):
    type: Literal["cost_at_most"]
    usd: float = Field(ge=0)


class LatencyAtMost(_Strict):
    type: Literal["latency_at_most"]
    seconds: float = Field(gt=0)


class TokensAtMost(_Strict):
    """Input plus output tokens of every model call of the run."""

    type: Literal["tokens_at_most"]
    tokens: int = Field(ge=0)


class LlmJudge(_Strict):
    """A rubric scored 0-1 by a judge model through the gateway (``stratus.evals.judge``)."""

    type: Literal["llm_judge"]
    rubric: str = Field(min_length=1)
    min_score: float = Field(default=0.7, ge=0, le=1)
    tier: Literal["fast", "smart"] = "smart"


Assertion = Annotated[
    FieldEquals
    | FieldOneOf
    | FieldMatches
    | OutputSchema
    | TextContains
    | TextNotContains
    | TextMatches
    | ToolCalled
    | ToolNotCalled
    | ContextContains
    | RoutedTo
    | JobSteps
    | Guarded
    | CostAtMost
    | LatencyAtMost
    | TokensAtMost
    | LlmJudge,
    Field(discriminator="type"),
]


#: Assertions that only a job case can check.
JOB_ASSERTIONS = frozenset({"routed_to", "job_steps"})


class Case(_Strict):
    id: str = Field(pattern=CASE_ID)
    description: str = ""
    #: ``critical``: the gate fails whenever this case fails, whatever the score.
    tags: list[str] = Field(default_factory=list)
    #: The agent's input: a string or a JSON object (as ``POST .../invoke`` takes it), or,
    #: for an agent with sessions, a list of turns: one session, the assertions on the last.
    input: (
        str
        | dict[str, Any]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    )
    #: Runs of the case (pass@k); ``stratus eval --samples K`` overrides it.
    #: ``invoke`` (the default): one synchronous call; ``job``: one asynchronous job
    #: (``POST /v1/jobs``), run to its end (a workflow agent's whole workflow). A list
    #: of turns is always a session.
    kind: Literal["invoke", "job"] = "invoke"
    #: A job case: submit with routing (``"route": true``), so a decision hands it on.
    route: bool = False
    #: The observed answer a captured case was made from; informational, never asserted.
    reference: Any = None
    samples: int = Field(default=1, ge=1, le=100)
    require: Literal["all", "majority", "any"] = "all"
    assertions: list[Assertion] = Field(min_length=1)

    @model_validator(mode="after")
    def _kind_fits(self) -> Case:
        if self.kind == "job" and isinstance(self.input, list):
            raise ValueError("kind: a list of turns is a session, it cannot be a job")
        if self.route and self.kind != "job":
            raise ValueError('route: only a job case ("kind": "job") can be routed')
        job_only = sorted({a.type for a in self.assertions if a.type in JOB_ASSERTIONS})
        if job_only and self.kind != "job":
            raise ValueError(f'assertions: {", ".join(job_only)} needs "kind": "job"')
        return self

    @property
    def critical(self) -> bool:
        return "critical" in self.tags

    @property
    def mode(self) -> Literal["invoke", "job", "session"]:
        """How the case runs: one invoke, one job, or one session (a list of turns)."""
        return "session" if isinstance(self.input, list) else self.kind


class Suite(_Strict):
    """One suite file: the cases of one agent, with the gate's threshold and tolerance."""

    schema_ref: str | None = Field(default=None, alias="$schema")
    agent: str = Field(pattern=r"^[a-z][a-z0-9_]{1,39}$")
    description: str = ""
    #: The agent fails the gate when its score (0-100) is below this.
    threshold: float = Field(default=0, ge=0, le=100)
    #: ... or when it dropped by more than this many points against the baseline.
    max_regression: float = Field(default=2, ge=0, le=100)
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen: set[str] = set()
        for case in self.cases:
            if case.id in seen:
                raise ValueError(f"case id {case.id!r} is used twice")
            seen.add(case.id)
        return self


class SuiteError(Exception):
    """A suite file that cannot be used; the message names file, case and field."""


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(the file)"


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop the discriminator tags pydantic adds (``assertions[0].tool_called.name``)."""
    kept: list[int | str] = []
    for index, part in enumerate(loc):
        previous = loc[index - 1] if index else None
        if isinstance(part, str) and isinstance(previous, int) and kept[-2:-1] == ["assertions"]:
            continue
        kept.append(part)
    return tuple(kept)


def _describe(error: ValidationError, raw: Any, where: str) -> str:
    lines = []
    for item in error.errors(include_url=False):
        loc = _clean_loc(tuple(item["loc"]))
        case = ""
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
            index = loc[1]
            cases = raw.get("cases") if isinstance(raw, dict) else None
            case_id = None
            if isinstance(cases, list) and index < len(cases) and isinstance(cases[index], dict):
                case_id = cases[index].get("id")
            case = f"case {case_id!r} (cases[{index}])" if case_id else f"case cases[{index}]"
            case += ": "
        lines.append(f"{where}: {case}{_path(loc)}: {item['msg']}")
    return "\n".join(lines)


def parse_suite(raw: Any, where: str) -> Suite:
    try:
        return Suite.model_validate(raw)
    except ValidationError as error:
        raise SuiteError(_describe(error, raw, where)) from None


def load_suite(path: Path, *, display: str | None = None) -> Suite:
    """Read and validate one suite file (``display``: how the file is named in errors)."""
    where = display or str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SuiteError(f"{where}: line {error.lineno}: not valid JSON: {error.msg}") from None
    except OSError as error:
        raise SuiteError(f"{where}: cannot be read: {error.strerror}") from None
    return parse_suite(raw, where)


def suite_files(evals_dir: Path) -> list[Path]:
    """The suite files of one agent's ``evals/`` directory (the baseline is not one)."""
    if not evals_dir.is_dir():
        return []
    return sorted(p for p in evals_dir.glob("*.json") if p.name != BASELINE_FILE)


def suite_json_schema() -> dict[str, Any]:
    """The published schema of a suite file (``evals/schema.json``)."""
    schema = Suite.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://stratus.dev/schemas/eval-suite.json"
    schema["title"] = "Stratus eval suite"
    return schema

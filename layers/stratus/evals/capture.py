"""Captured cases: stored interactions turned into candidate eval cases.

``stratus eval capture`` (``infra/eval_capture.py``) reads an agent's finished
jobs and session turns and hands them here as :class:`Interaction` values; this
module picks the sample and writes each one as a case of a valid suite, with
the observed answer as its ``reference`` and assertions that hold for that
answer (so the file passes as written against the same model), for a person to
review, tighten and commit:

* a structured answer: ``output_schema`` (the agent's own; a workflow's final
  schema given explicitly) and ``field_equals`` on every enum and boolean field
  of that schema (``category`` of triage);
* a text answer: ``text_contains`` of a short distinctive phrase of the answer
  (the run of words with the most non-stopword letters that the question does
  not contain);
* every case: ``cost_at_most`` and ``tokens_at_most`` with headroom (twice the
  observed figure, at least +$0.001 and +200 tokens), except a routed job, whose
  stored cost is the router's only; a session turn's bound is its whole
  session's (a replay of the first k turns costs at most that);
* a job submitted with ``route``: ``routed_to`` the observed agent (or null);
* a workflow job: ``job_steps`` with every step it recorded (plan, research-N, review).

Nothing about the caller is written: the tenant id is never a field, and any
occurrence of it (or of an API key) in an input or answer is replaced by
``<tenant>`` / ``<redacted key>``. Pure logic: no AWS, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal

from stratus.evals.models import Case, Suite
from stratus.sessions.model import StoredMessage

TAG = "captured"
TENANT_PLACEHOLDER = "<tenant>"
KEY_PLACEHOLDER = "<redacted key>"
#: Stratus API keys, and the usual shapes of model provider keys.
_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: Words that never make a phrase distinctive.
STOPWORDS_TEXT = (
    "a an and are as at be but by do for from has have i if in is it its me my no "
    "not of on or so that the their then there this to was we were what when with you your"
)
_STOPWORDS = frozenset(STOPWORDS_TEXT.split())
MAX_PHRASE_CHARS = 60
COST_FLOOR_USD = 0.001
TOKENS_FLOOR = 200
#: The one assertion of a case nothing else can be asserted on (a reviewer replaces it).
FALLBACK_LATENCY_S = 300.0


class CaptureError(ValueError):
    """An option of the capture that cannot be used (exit code 2)."""


def parse_since(text: str, now: datetime) -> datetime:
    """The cutoff: ``30m``, ``12h``, ``1d``, ``7d`` (also ``s`` and ``w``) back from ``now``,
    or an ISO date/time (UTC unless it names an offset). Timezone-aware, never after ``now``."""
    value = text.strip()
    match = _SINCE.match(value.lower())
    if match:
        amount = int(match.group(1))
        if amount <= 0:
            raise CaptureError(f"--since {text}: the duration must be positive")
        return now - timedelta(**{_UNITS[match.group(2)]: amount})
    try:
        cutoff = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CaptureError(
            f"--since {text!r}: give a duration (30m, 12h, 1d, 7d) or an ISO date/time "
            "(2026-11-30 or 2026-11-30T12:00:00Z)"
        ) from None
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=UTC)
    if cutoff > now:
        raise CaptureError(f"--since {text}: that is in the future")
    return cutoff


@dataclass(frozen=True)
class Interaction:
    """One stored answer of the agent: a finished job, or one turn of a session."""

    source: Literal["job", "session"]
    #: The job id, or ``<session id>#<turn>``: what the case id hashes.
    source_id: str
    observed_at: datetime
    input: str | dict[str, Any] | list[str]
    answer: Any
    #: Used to filter and to scrub; never written.
    tenant_id: str
    cost_usd: float | None = None
    tokens: int | None = None
    #: Jobs: submitted with ``route: true``, and the agent it was handed to (None: kept).
    route: bool = False
    routed_to: str | None = None
    #: How the description names it ("job job_1f...", "turn 2 of 3 of session 8c...").
    label: str = ""
    #: A workflow job's recorded steps (``plan``, ``research-0``, ``review``), if read.
    steps: tuple[str, ...] = ()


def _scrub_text(text: str, tenant_id: str) -> str:
    if tenant_id:
        text = text.replace(tenant_id, TENANT_PLACEHOLDER)
    return _KEY.sub(KEY_PLACEHOLDER, text)


def scrub(value: Any, tenant_id: str) -> Any:
    """``value`` with the tenant id and API keys replaced, in every string (keys too)."""
    if isinstance(value, str):
        return _scrub_text(value, tenant_id)
    if isinstance(value, Mapping):
        return {_scrub_text(str(k), tenant_id): scrub(v, tenant_id) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, tenant_id) for v in value]
    return value


def choose(items: Sequence[Interaction], n: int, seed: int | None = None) -> list[Interaction]:
    """At most ``n``: a random sample (repeatable with ``seed``) when there are more; always
    returned newest first."""
    if n < 1:
        raise CaptureError("--sample must be at least 1")
    # A stable order first, so that the same seed picks the same interactions.
    ordered = sorted(items, key=lambda i: (i.observed_at, i.source, i.source_id), reverse=True)
    if len(ordered) > n:
        picked = set(random.Random(seed).sample(range(len(ordered)), n))  # noqa: S311 - sampling
        ordered = [item for index, item in enumerate(ordered) if index in picked]
    return ordered


def case_id(item: Interaction) -> str:
    digest = hashlib.sha256(f"{item.source}\n{item.source_id}".encode()).hexdigest()
    return f"captured-{item.source}-{digest[:12]}"


# -- interactions from stored items --------------------------------------------------------


def _iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _loads(text: Any, default: Any = None) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else default
    except ValueError:
        return default


def is_eval_traffic(metadata: Any) -> bool:
    """Sessions (and jobs) the eval runner itself created (``{"source": "eval"}``)."""
    return isinstance(metadata, Mapping) and metadata.get("source") == "eval"


def job_interaction(item: Mapping[str, Any]) -> Interaction | None:
    """A succeeded job item (``stratus.jobs.store`` shape) as an interaction; None for a job
    that cannot make a case (no result, a truncated one, or eval traffic)."""
    if item.get("status") != "succeeded" or not isinstance(item.get("result"), str):
        return None
    answer = _loads(item["result"])
    if isinstance(answer, Mapping) and answer.get("truncated") is True and "preview" in answer:
        return None
    metadata = _loads(item.get("metadata"), {})
    if answer is None or is_eval_traffic(metadata):
        return None
    routed = item.get("routed_to")
    routed_agent = str(routed["agent"]) if isinstance(routed, Mapping) else None
    label = f"job {item['job_id']}"
    if isinstance(metadata, Mapping) and metadata.get("routed_from"):
        label += f" (routed from {metadata['routed_from']})"
    return Interaction(
        source="job",
        source_id=str(item["job_id"]),
        observed_at=_iso(str(item.get("updated_at") or item["created_at"])),
        input=_loads(item.get("input"), ""),
        answer=answer,
        tenant_id=str(item.get("tenant_id", "")),
        cost_usd=float(item.get("cost_usd", 0)),
        tokens=int(item.get("input_tokens", 0)) + int(item.get("output_tokens", 0)),
        route=bool(item.get("route")),
        routed_to=routed_agent,
        label=label,
    )


def session_interactions(
    head: Mapping[str, Any], messages: Sequence[StoredMessage], *, since: datetime
) -> list[Interaction]:
    """Each answered turn of a session (head item, messages oldest first) answered at or
    after ``since``: the input is every user message up to that turn, the reference the
    reply. Turns with a message cut to the stored size are left out."""
    if is_eval_traffic(_loads(head.get("metadata"), {})):
        return []
    session_id, turns = str(head["session_id"]), int(head.get("turns", 0))
    cost = float(head.get("cost_usd", 0))
    tokens = int(head.get("in_tok", 0)) + int(head.get("out_tok", 0))
    asked: list[StoredMessage] = []
    out: list[Interaction] = []
    for message in messages:
        if message.role == "user":
            asked.append(message)
            continue
        observed = datetime.fromtimestamp(message.created_ms / 1000, UTC)
        so_far = [m for m in asked if m.turn <= message.turn]
        if observed < since or not so_far or message.truncated:
            continue
        if any(m.truncated for m in so_far):
            continue
        out.append(
            Interaction(
                source="session",
                source_id=f"{session_id}#{message.turn}",
                observed_at=observed,
                input=[m.content for m in so_far],
                answer=message.content,
                tenant_id=str(head.get("tenant_id", "")),
                cost_usd=cost,
                tokens=tokens,
                label=f"turn {message.turn} of {turns} of session {session_id}",
            )
        )
    return out


# -- assertions ----------------------------------------------------------------------------


def _resolve(node: Any, schema: Mapping[str, Any]) -> Any:
    """Follow a local ``$ref`` (``#/$defs/X``) and a one-branch ``allOf``."""
    for _ in range(10):
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = schema
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            node = target
            continue
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1:
            node = all_of[0]
            continue
        return node
    return node


def categorical_fields(schema: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the enum and boolean fields of an object schema (nested objects
    included, arrays not): the fields a ``field_equals`` can pin."""
    paths: list[str] = []

    def walk(node: Any, prefix: str, depth: int) -> None:
        node = _resolve(node, schema)
        if not isinstance(node, Mapping) or depth > 4:
            return
        for name, sub in (node.get("properties") or {}).items():
            sub = _resolve(sub, schema)
            if not isinstance(sub, Mapping):
                continue
            path = f"{prefix}{name}"
            if "enum" in sub or "const" in sub or sub.get("type") == "boolean":
                paths.append(path)
            elif sub.get("type") == "object" or "properties" in sub:
                walk(sub, path + ".", depth + 1)

    walk(schema, "", 0)
    return paths


def _field(value: Any, path: str) -> tuple[bool, Any]:
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _words(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"\S+", text))


def _weight(word: str) -> int:
    core = re.sub(r"[^\w]", "", word.lower())
    return 0 if not core or core in _STOPWORDS else len(core)


def distinctive_phrase(answer: str, question: str = "") -> str | None:
    """A short run of the answer's words (at most 60 characters, one line) that is most
    specific to it: the most letters outside stopwords, not in the question, no placeholder.
    None if the answer has no such run."""
    spans = _words(answer)
    asked = question.lower()
    best: tuple[int, int, str] | None = None  # (score, -start, phrase)
    for i in range(len(spans)):
        for j in range(i, min(i + 8, len(spans))):
            phrase = answer[spans[i].start() : spans[j].end()]
            if len(phrase) > MAX_PHRASE_CHARS:
                break
            if "\n" in phrase or TENANT_PLACEHOLDER in phrase or KEY_PLACEHOLDER in phrase:
                continue
            if j - i < 2 and len(spans) > 2:  # three words at least, where there are three
                continue
            score = sum(_weight(m.group()) for m in spans[i : j + 1])
            if score == 0:
                continue
            if asked and phrase.lower() in asked:
                score //= 4
            key = (score, -i, phrase)
            if best is None or key[:2] > best[:2]:
                best = key
    return None if best is None else best[2]


def _headroom_usd(cost: float) -> float:
    bound = max(cost * 2, cost + COST_FLOOR_USD)
    return math.ceil(bound * 1_000_000) / 1_000_000


def _headroom_tokens(tokens: int) -> int:
    return max(tokens * 2, tokens + TOKENS_FLOOR)


def _question(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return json.dumps(value, sort_keys=True)


def assertions_for(
    item: Interaction,
    answer: Any,
    schema: Mapping[str, Any] | None,
    *,
    explicit_schema: bool = False,
    routing: bool = True,
    steps: bool = True,
) -> list[dict[str, Any]]:
    """Assertions that hold for ``answer`` (already scrubbed); see the module docstring."""
    out: list[dict[str, Any]] = []
    if isinstance(answer, Mapping) and schema is not None:
        out.append(
            {"type": "output_schema", "schema": dict(schema)}
            if explicit_schema
            else {"type": "output_schema"}
        )
        for path in categorical_fields(schema):
            found, value = _field(answer, path)
            if found:
                out.append({"type": "field_equals", "path": path, "value": value})
    elif isinstance(answer, str):
        phrase = distinctive_phrase(answer, _question(item.input))
        if phrase:
            out.append({"type": "text_contains", "text": phrase})
    if item.route and routing:
        out.append({"type": "routed_to", "agent": item.routed_to})
    if len(item.steps) > 1 and steps:
        out.append({"type": "job_steps", "include": list(item.steps)})
    if not (item.route and item.routed_to):
        if item.cost_usd is not None:
            out.append({"type": "cost_at_most", "usd": _headroom_usd(item.cost_usd)})
        if item.tokens is not None:
            out.append({"type": "tokens_at_most", "tokens": _headroom_tokens(item.tokens)})
    return out


# -- cases and the suite -------------------------------------------------------------------


@cache
def supported() -> frozenset[str]:
    """What the suite format of this checkout takes beyond the basics (``reference``,
    ``kind``/``route`` of job cases, the ``routed_to`` and ``job_steps`` assertions), so
    capture never writes a field that ``stratus eval`` would refuse."""
    fields = set(Case.model_fields)
    found: set[str] = {name for name in ("reference", "kind", "route") if name in fields}
    probes: dict[str, dict[str, Any]] = {
        "routed_to": {"agent": None},
        "job_steps": {"include": ["main"]},
    }
    for kind, fields_of in probes.items() if "kind" in found else ():
        probe = {"id": "probe", "input": "x", "kind": "job", "route": True}
        try:
            Case.model_validate({**probe, "assertions": [{"type": kind, **fields_of}]})
            found.add(kind)
        except ValueError:
            pass
    return frozenset(found)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_case(
    item: Interaction,
    *,
    where: str,
    schema: Mapping[str, Any] | None,
    explicit_schema: bool = False,
    features: Iterable[str] | None = None,
) -> dict[str, Any]:
    """One candidate case (a JSON object of the suite format) from one interaction."""
    can = supported() if features is None else frozenset(features)
    job_case = item.source == "job" and "kind" in can
    user_input = scrub(item.input, item.tenant_id)
    answer = scrub(item.answer, item.tenant_id)
    assertions = assertions_for(
        item,
        answer,
        schema,
        explicit_schema=explicit_schema,
        routing=job_case and "routed_to" in can,
        steps=job_case and "job_steps" in can,
    )
    if not assertions:  # an empty answer without a cost: still a valid, reviewable case
        assertions = [{"type": "latency_at_most", "seconds": FALLBACK_LATENCY_S}]
    case: dict[str, Any] = {
        "id": case_id(item),
        "description": (
            f"Captured from {item.label or item.source} on {where}, answered "
            f"{_stamp(item.observed_at)}. The reference is the observed answer; review the "
            "input, the reference and the assertions before committing."
        ),
        "tags": [TAG],
        "input": user_input,
    }
    if job_case:
        case["kind"] = "job"
        if item.route and "route" in can:
            case["route"] = True
    if "reference" in can:
        case["reference"] = answer
    case["assertions"] = assertions
    return case


def build_suite(
    agent: str,
    cases: list[dict[str, Any]],
    *,
    where: str,
    since: datetime,
    total: int,
    now: datetime,
    schema_ref: str | None = None,
) -> dict[str, Any]:
    """The suite document (validated here: what is written is what ``stratus eval`` loads)."""
    document: dict[str, Any] = {}
    if schema_ref:
        document["$schema"] = schema_ref
    document["agent"] = agent
    document["description"] = (
        f"Candidate cases captured {_stamp(now)} from {where}: {len(cases)} of the {total} "
        f"answers of {agent} since {_stamp(since)}. Not reviewed yet: check each case, "
        "tighten its assertions, then commit it."
    )
    document["cases"] = cases
    Suite.model_validate(document)
    return document

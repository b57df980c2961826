"""``stratus eval capture``'s pure parts: ``--since``, the sample, and the cases it builds.

No AWS and no model: interactions are built from items shaped as the job and
session stores write them. The command over a running local cloud (and
``--stack``) is ``tests/e2e/test_eval_capture.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from functions.agents import load_agent
from infra import eval_capture
from stratus.evals import capture
from stratus.evals.capture import CaptureError, Interaction
from stratus.evals.models import Case, parse_suite
from stratus.sessions.model import StoredMessage

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TENANT = "tnt_0123456789abcdef"
TRIAGE_SCHEMA = load_agent("triage").output_schema.model_json_schema()  # type: ignore[union-attr]


def _job(**fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "job_id": "job_1",
        "sk": "JOB",
        "tenant_id": TENANT,
        "agent": "triage",
        "status": "succeeded",
        "input": json.dumps("Where is my order A-1001?"),
        "result": json.dumps({"category": "order_status", "confidence": 0.8, "summary": "Late."}),
        "metadata": "{}",
        "route": False,
        "cost_usd": 0.00042,
        "input_tokens": 120,
        "output_tokens": 30,
        "created_at": "2026-12-01T11:00:00.000+00:00",
        "updated_at": "2026-12-01T11:00:02.000+00:00",
    }
    item.update(fields)
    return item


def _interaction(n: int, **fields: Any) -> Interaction:
    base: dict[str, Any] = {
        "source": "job",
        "source_id": f"job_{n}",
        "observed_at": NOW - timedelta(minutes=n),
        "input": f"message {n}",
        "answer": "ok",
        "tenant_id": TENANT,
    }
    base.update(fields)
    return Interaction(**base)


# -- --since -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("1d", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("90s", timedelta(seconds=90)),
        (" 12H ", timedelta(hours=12)),
    ],
)
def test_since_takes_durations_back_from_now(text: str, back: timedelta) -> None:
    assert capture.parse_since(text, NOW) == NOW - back


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC)),
        ("2026-11-30T08:30:00Z", datetime(2026, 11, 30, 8, 30, tzinfo=UTC)),
        ("2026-11-30T08:30", datetime(2026, 11, 30, 8, 30, tzinfo=UTC)),
        ("2026-11-30T10:30:00+02:00", datetime(2026, 11, 30, 8, 30, tzinfo=UTC)),
    ],
)
def test_since_takes_iso_dates_and_times_in_utc(text: str, expected: datetime) -> None:
    assert capture.parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "give a duration"),
        ("1y", "give a duration"),
        ("-1d", "give a duration"),
        ("0h", "must be positive"),
        ("2026-12-02", "in the future"),
    ],
)
def test_since_refuses_what_it_cannot_use(text: str, message: str) -> None:
    with pytest.raises(CaptureError, match=message):
        capture.parse_since(text, NOW)


# -- the sample --------------------------------------------------------------------------


def test_fewer_than_the_sample_are_all_kept_newest_first() -> None:
    items = [_interaction(n) for n in (5, 1, 3)]
    assert [i.source_id for i in capture.choose(items, 20)] == ["job_1", "job_3", "job_5"]


def test_a_sample_is_bounded_random_repeatable_and_newest_first() -> None:
    items = [_interaction(n) for n in range(40)]
    first = capture.choose(items, 5, seed=7)
    again = capture.choose(list(reversed(items)), 5, seed=7)
    other = capture.choose(items, 5, seed=8)
    assert len(first) == 5
    assert [i.source_id for i in first] == [i.source_id for i in again]
    assert {i.source_id for i in first} != {i.source_id for i in other}
    stamps = [i.observed_at for i in first]
    assert stamps == sorted(stamps, reverse=True)
    with pytest.raises(CaptureError, match="at least 1"):
        capture.choose(items, 0)


# -- interactions from stored items ----------------------------------------------------------


def test_a_succeeded_job_becomes_an_interaction() -> None:
    item = capture.job_interaction(_job())
    assert item is not None
    assert item.input == "Where is my order A-1001?"
    assert item.answer["category"] == "order_status"
    assert item.cost_usd == pytest.approx(0.00042) and item.tokens == 150
    assert item.observed_at == datetime(2026, 12, 1, 11, 0, 2, tzinfo=UTC)
    assert item.route is False and item.routed_to is None


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "failed"},
        {"result": None},
        {"result": json.dumps({"truncated": True, "bytes": 200000, "preview": "{..."})},
        {"metadata": json.dumps({"source": "eval"})},
    ],
)
def test_jobs_that_cannot_make_a_case_are_left_out(fields: dict[str, Any]) -> None:
    assert capture.job_interaction(_job(**fields)) is None


def test_a_routed_job_keeps_where_it_went() -> None:
    item = capture.job_interaction(
        _job(route=True, routed_to={"agent": "order_status", "job_id": "job_child"})
    )
    assert item is not None and item.route and item.routed_to == "order_status"


def _message(index: int, role: str, content: str, turn: int, at: datetime) -> StoredMessage:
    return StoredMessage(index, role, content, turn, int(at.timestamp() * 1000), 10)  # type: ignore[arg-type]


def test_each_session_turn_replays_the_user_messages_up_to_it() -> None:
    head = {"session_id": "s1", "tenant_id": TENANT, "turns": 3, "cost_usd": 0.003, "in_tok": 900}
    old, new = NOW - timedelta(days=3), NOW - timedelta(hours=1)
    messages = [
        _message(1, "user", "Where is A-1001?", 1, old),
        _message(2, "assistant", "In transit with DHL.", 1, old),
        _message(3, "user", "And when will it arrive?", 2, new),
        _message(4, "assistant", "On November 24.", 2, new),
        _message(5, "user", "Thanks", 3, new),
        _message(6, "assistant", "You're welcome.", 3, new),
    ]
    turns = capture.session_interactions(head, messages, since=NOW - timedelta(days=1))
    # The first turn is older than the cutoff; the later ones still replay it.
    assert [t.input for t in turns] == [
        ["Where is A-1001?", "And when will it arrive?"],
        ["Where is A-1001?", "And when will it arrive?", "Thanks"],
    ]
    assert [t.answer for t in turns] == ["On November 24.", "You're welcome."]
    assert turns[0].source_id == "s1#2" and turns[0].label == "turn 2 of 3 of session s1"
    assert turns[0].cost_usd == pytest.approx(0.003) and turns[0].tokens == 900
    eval_head = {**head, "metadata": json.dumps({"source": "eval"})}
    assert capture.session_interactions(eval_head, messages, since=old) == []


def test_a_turn_with_a_message_cut_to_the_stored_size_is_left_out() -> None:
    head = {"session_id": "s1", "tenant_id": TENANT, "turns": 1}
    cut = StoredMessage(1, "user", "x" * 10, 1, int(NOW.timestamp() * 1000), 10, truncated=True)
    messages = [cut, _message(2, "assistant", "ok", 1, NOW)]
    assert capture.session_interactions(head, messages, since=NOW - timedelta(days=1)) == []


# -- cases -------------------------------------------------------------------------------


def test_the_enum_and_boolean_fields_of_a_schema_are_found() -> None:
    assert capture.categorical_fields(TRIAGE_SCHEMA) == ["category"]
    nested = {
        "$defs": {"D": {"type": "object", "properties": {"eligible": {"type": "boolean"}}}},
        "type": "object",
        "properties": {
            "decision": {"$ref": "#/$defs/D"},
            "kind": {"const": "x"},
            "items": {"type": "array", "items": {"enum": ["a"]}},
            "note": {"type": "string"},
        },
    }
    assert capture.categorical_fields(nested) == ["decision.eligible", "kind"]


def test_a_structured_job_answer_becomes_a_case_that_pins_its_category() -> None:
    item = capture.job_interaction(_job())
    assert item is not None
    case = capture.build_case(item, where="the local cloud", schema=TRIAGE_SCHEMA)
    assert case["id"].startswith("captured-job-") and case["tags"] == ["captured"]
    assert case["kind"] == "job" and "route" not in case
    assert case["reference"] == {"category": "order_status", "confidence": 0.8, "summary": "Late."}
    assert case["assertions"] == [
        {"type": "output_schema"},
        {"type": "field_equals", "path": "category", "value": "order_status"},
        {"type": "cost_at_most", "usd": pytest.approx(0.00142)},
        {"type": "tokens_at_most", "tokens": 350},
    ]
    assert "job job_1 on the local cloud" in case["description"]
    assert "2026-12-01T11:00:02Z" in case["description"]
    Case.model_validate(case)  # what stratus eval loads


def test_a_routed_job_case_keeps_the_routing_and_asserts_where_it_went() -> None:
    routed = capture.job_interaction(
        _job(route=True, routed_to={"agent": "order_status", "job_id": "job_child"})
    )
    kept = capture.job_interaction(_job(job_id="job_2", route=True))
    assert routed is not None and kept is not None
    case = capture.build_case(routed, where="x", schema=TRIAGE_SCHEMA)
    assert case["route"] is True
    types = [a["type"] for a in case["assertions"]]
    assert {"type": "routed_to", "agent": "order_status"} in case["assertions"]
    # The stored cost is the router's only: no cost bound on a routed job.
    assert "cost_at_most" not in types and "tokens_at_most" not in types
    kept_case = capture.build_case(kept, where="x", schema=TRIAGE_SCHEMA)
    assert {"type": "routed_to", "agent": None} in kept_case["assertions"]
    Case.model_validate(case)
    Case.model_validate(kept_case)


def test_a_text_answer_is_pinned_by_a_distinctive_phrase_not_from_the_question() -> None:
    answer = (
        '[fake model] This is an offline reply to "Where is my order A-1001?".\n'
        'The tool returned: "{"carrier": "DHL", "status": "in_transit"}".'
    )
    phrase = capture.distinctive_phrase(answer, "Where is my order A-1001?")
    assert phrase is not None and phrase in answer
    assert len(phrase) <= capture.MAX_PHRASE_CHARS and "\n" not in phrase
    assert phrase.lower() not in "where is my order a-1001?"
    assert capture.distinctive_phrase("", "q") is None
    assert capture.distinctive_phrase("ok", "q") == "ok"


def test_a_session_turn_case_is_a_list_of_turns_with_a_text_check() -> None:
    item = _interaction(
        1,
        source="session",
        source_id="s1#2",
        input=["Where is A-1001?", "And when will it arrive?"],
        answer="It should arrive on November 24 with DHL Express.",
        cost_usd=0.002,
        tokens=400,
        label="turn 2 of 2 of session s1",
    )
    case = capture.build_case(item, where="the local cloud", schema=None)
    assert case["input"] == ["Where is A-1001?", "And when will it arrive?"]
    assert "kind" not in case
    contains = [a for a in case["assertions"] if a["type"] == "text_contains"]
    assert len(contains) == 1 and contains[0]["text"] in item.answer
    assert {"type": "tokens_at_most", "tokens": 800} in case["assertions"]
    assert case["id"].startswith("captured-session-")
    Case.model_validate(case)


def test_the_tenant_id_and_keys_are_never_written() -> None:
    item = capture.job_interaction(
        _job(
            input=json.dumps({"text": f"I am {TENANT}", TENANT: "sk-stratus-" + "a" * 40}),
            result=json.dumps({"category": "other", "confidence": 1, "summary": f"{TENANT}"}),
        )
    )
    assert item is not None
    text = json.dumps(capture.build_case(item, where="x", schema=TRIAGE_SCHEMA))
    assert TENANT not in text and "sk-stratus-" not in text
    assert capture.TENANT_PLACEHOLDER in text and capture.KEY_PLACEHOLDER in text
    phrase_item = _interaction(1, answer=f"Your account {TENANT} is fine today, friend.")
    case = capture.build_case(phrase_item, where="x", schema=None)
    assert all(TENANT not in json.dumps(a) for a in case["assertions"])
    assert all(capture.TENANT_PLACEHOLDER not in a.get("text", "") for a in case["assertions"])


def test_without_the_newer_suite_fields_a_case_still_validates() -> None:
    item = capture.job_interaction(_job(route=True, routed_to={"agent": "returns"}))
    assert item is not None
    case = capture.build_case(item, where="x", schema=TRIAGE_SCHEMA, features=())
    assert not {"kind", "route", "reference"} & set(case)
    assert all(a["type"] != "routed_to" for a in case["assertions"])
    Case.model_validate(case)


def test_the_suite_is_valid_and_says_where_and_when() -> None:
    items = [capture.job_interaction(_job(job_id=f"job_{n}")) for n in range(3)]
    cases = [
        capture.build_case(i, where="the local cloud", schema=TRIAGE_SCHEMA) for i in items if i
    ]
    doc = capture.build_suite(
        "triage",
        cases,
        where="the local cloud",
        since=NOW - timedelta(days=1),
        total=7,
        now=NOW,
        schema_ref="../../../../evals/schema.json",
    )
    assert list(doc) == ["$schema", "agent", "description", "cases"]
    assert "3 of the 7 answers of triage since 2026-11-30T12:00:00Z" in doc["description"]
    suite = parse_suite(doc, "captured.json")
    assert len({c.id for c in suite.cases}) == 3
    plain = capture.build_suite(
        "triage", cases, where="x", since=NOW, total=3, now=NOW, schema_ref=None
    )
    assert "$schema" not in plain


# -- the command's checks (no AWS reached) -------------------------------------------------


def _run(tmp_path: Path, *argv: str) -> int:
    return eval_capture.main(["--agent", "triage", "--facts", str(tmp_path / "none.json"), *argv])


def test_no_local_cloud_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path, "--out", str(tmp_path / "c.json")) == 2
    err = capsys.readouterr().err
    assert "no local cloud is running" in err and "stratus dev" in err
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "soon"], "--since 'soon'"),
        (["--sample", "0"], "--sample must be at least 1"),
        (["--agent", "nobody"], "--agent nobody: no such agent"),
    ],
)
def test_unusable_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert _run(tmp_path, "--out", str(tmp_path / "c.json"), *argv) == 2
    assert message in capsys.readouterr().err


def test_an_existing_file_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.json"
    out.write_text("{}")
    assert _run(tmp_path, "--out", str(out)) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "{}"
    # With --force it goes on (and stops at the missing local cloud).
    assert _run(tmp_path, "--out", str(out), "--force") == 2
    assert "no local cloud is running" in capsys.readouterr().err


def test_stack_tables_are_found_by_their_cdk_logical_ids() -> None:
    import boto3

    client = boto3.client(
        "cloudformation",
        region_name="eu-west-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )

    def resource(logical: str, physical: str, kind: str = "AWS::DynamoDB::Table") -> Any:
        return {
            "LogicalResourceId": logical,
            "PhysicalResourceId": physical,
            "ResourceType": kind,
            "LastUpdatedTimestamp": NOW,
            "ResourceStatus": "CREATE_COMPLETE",
        }

    with Stubber(client) as stub:
        stub.add_response(
            "list_stack_resources",
            {
                "StackResourceSummaries": [
                    resource("TablesJobsAB12CD34", "Stratus-dev-TablesJobs-1"),
                    resource("TablesJobsIndexRole", "role", "AWS::IAM::Role"),
                ],
                "NextToken": "page-2",
            },
            {"StackName": "Stratus-dev"},
        )
        stub.add_response(
            "list_stack_resources",
            {
                "StackResourceSummaries": [
                    resource("TablesSessions0F1E2D3C", "Stratus-dev-TablesSessions-2"),
                    resource("TablesSessionsArchiveAB12CD34", "not-it"),
                ]
            },
            {"StackName": "Stratus-dev", "NextToken": "page-2"},
        )
        assert eval_capture.stack_tables(client, "Stratus-dev") == {
            "jobs": "Stratus-dev-TablesJobs-1",
            "sessions": "Stratus-dev-TablesSessions-2",
        }


def test_a_workflow_job_case_names_its_schema_and_its_steps() -> None:
    report = {"type": "object", "title": "Report", "properties": {"answer": {"type": "string"}}}
    item = _interaction(
        1,
        answer={"answer": "DHL"},
        cost_usd=0.01,
        tokens=1000,
        steps=("plan", "research-0", "review"),
    )
    case = capture.build_case(item, where="x", schema=report, explicit_schema=True)
    assert case["assertions"][0] == {"type": "output_schema", "schema": report}
    assert {"type": "job_steps", "include": ["plan", "research-0", "review"]} in case["assertions"]
    single = capture.build_case(_interaction(2, steps=("main",)), where="x", schema=None)
    assert all(a["type"] != "job_steps" for a in single["assertions"])
    Case.model_validate(case)

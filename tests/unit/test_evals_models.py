"""The eval suite format: strict models, errors that name file, case and field, the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import eval_cli
from infra.paths import REPO_ROOT
from stratus.evals.models import Suite, SuiteError, load_suite, suite_files


def _suite(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "agent": "triage",
        "cases": [
            {
                "id": "ok",
                "input": "Where is my order?",
                "assertions": [{"type": "field_equals", "path": "category", "value": "x"}],
            }
        ],
    }
    base.update(overrides)
    return base


def _write(tmp_path: Path, data: Any, name: str = "suite.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_a_malformed_case_names_the_file_the_case_and_the_field(tmp_path: Path) -> None:
    data = _suite()
    data["cases"].append(
        {
            "id": "bad-tool",
            "input": "hi",
            "assertions": [{"type": "cost_at_most", "usd": 0.1}, {"type": "tool_called"}],
        }
    )
    path = _write(tmp_path, data)
    with pytest.raises(SuiteError) as error:
        load_suite(path, display="functions/agents/triage/evals/suite.json")
    message = str(error.value)
    assert message == (
        "functions/agents/triage/evals/suite.json: case 'bad-tool' (cases[1]): "
        "cases[1].assertions[1].name: Field required"
    )


def test_unknown_fields_and_types_are_errors_not_silently_ignored(tmp_path: Path) -> None:
    data = _suite()
    data["cases"][0]["asserts"] = []
    data["cases"][0]["assertions"].append({"type": "field_equal", "path": "a", "value": 1})
    with pytest.raises(SuiteError) as error:
        load_suite(_write(tmp_path, data))
    lines = str(error.value).splitlines()
    assert any("case 'ok' (cases[0]): cases[0].asserts: Extra inputs" in line for line in lines)
    assert any("cases[0].assertions[1]: Input tag 'field_equal'" in line for line in lines)


def test_a_case_without_an_id_is_named_by_its_index(tmp_path: Path) -> None:
    data = _suite()
    data["cases"][0].pop("id")
    with pytest.raises(SuiteError, match=r"case cases\[0\]: cases\[0\]\.id: Field required"):
        load_suite(_write(tmp_path, data))


def test_suite_level_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"suite\.json: threshold: Input should be less"):
        load_suite(_write(tmp_path, _suite(threshold=120)))
    with pytest.raises(SuiteError, match=r"suite\.json: line 1: not valid JSON"):
        load_suite(_write(tmp_path, "{nope"))


def test_bad_regex_duplicate_ids_and_bad_samples_are_rejected(tmp_path: Path) -> None:
    data = _suite()
    data["cases"][0]["assertions"] = [{"type": "text_matches", "pattern": "("}]
    with pytest.raises(SuiteError, match=r"cases\[0\]\.assertions\[0\]\.pattern: .*regular exp"):
        load_suite(_write(tmp_path, data))
    data = _suite()
    data["cases"].append(data["cases"][0])
    with pytest.raises(SuiteError, match="case id 'ok' is used twice"):
        load_suite(_write(tmp_path, data))
    data = _suite()
    data["cases"][0]["samples"] = 0
    with pytest.raises(SuiteError, match=r"case 'ok' \(cases\[0\]\): cases\[0\]\.samples"):
        load_suite(_write(tmp_path, data))


def test_defaults_of_a_case_and_a_suite() -> None:
    suite = Suite.model_validate(_suite())
    assert (suite.threshold, suite.max_regression) == (0, 2)
    case = suite.cases[0]
    assert (case.samples, case.require, case.tags, case.critical) == (1, "all", [], False)


def test_the_published_schema_is_current() -> None:
    on_disk = (REPO_ROOT / "evals" / "schema.json").read_text(encoding="utf-8")
    assert on_disk == eval_cli.schema_text(), (
        "evals/schema.json is stale: run .venv/bin/python -m infra.cli eval --write-schema"
    )


def test_every_committed_suite_is_valid_and_matches_the_schema() -> None:
    import jsonschema

    schema = json.loads((REPO_ROOT / "evals" / "schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    files = [
        path
        for agent in (REPO_ROOT / "functions" / "agents").iterdir()
        for path in suite_files(agent / "evals")
    ]
    assert files
    for path in files:
        validator.validate(json.loads(path.read_text(encoding="utf-8")))
        load_suite(path)


def test_the_triage_suites_cover_every_category_with_at_least_30_cases() -> None:
    suites = eval_cli.load_suites(eval_cli.AGENTS_DIR, ["triage"])["triage"]
    cases = [case for suite in suites for case in suite.cases]
    assert len(cases) >= 30
    tags = {tag for case in cases for tag in case.tags}
    assert {"order_status", "return_request", "billing", "tech_support", "other"} <= tags
    assert {"ambiguous", "adversarial", "critical"} <= tags


def test_a_suite_under_the_wrong_agent_and_ids_reused_across_files_are_errors(
    tmp_path: Path,
) -> None:
    evals = tmp_path / "triage" / "evals"
    evals.mkdir(parents=True)
    _write(evals, _suite(agent="returns"), "a.json")
    with pytest.raises(eval_cli.UsageError, match=r"a\.json: agent: the suite is for 'returns'"):
        eval_cli.load_suites(tmp_path, ["triage"])
    _write(evals, _suite(), "a.json")
    _write(evals, _suite(), "b.json")
    with pytest.raises(eval_cli.UsageError, match=r"b\.json: cases: id 'ok' is also used"):
        eval_cli.load_suites(tmp_path, ["triage"])


def test_job_cases_route_and_reference_parse_with_defaults() -> None:
    data = _suite()
    data["cases"].append(
        {
            "id": "routed",
            "kind": "job",
            "route": True,
            "input": {"message": "Where is my order?"},
            "reference": {"category": "order_status", "anything": [1, None]},
            "assertions": [
                {"type": "routed_to", "agent": "order_status"},
                {"type": "routed_to", "agent": None},
                {"type": "job_steps", "include": ["main"]},
            ],
        }
    )
    plain, job = Suite.model_validate(data).cases
    assert (plain.kind, plain.route, plain.reference, plain.mode) == (
        "invoke",
        False,
        None,
        "invoke",
    )
    assert (job.kind, job.route, job.mode) == ("job", True, "job")
    assert job.reference == {"category": "order_status", "anything": [1, None]}
    routed = job.assertions[0]
    assert routed.type == "routed_to" and routed.agent == "order_status"
    assert job.assertions[1].agent is None  # type: ignore[union-attr]
    turns = Suite.model_validate(
        _suite(
            cases=[
                {"id": "t", "input": ["a", "b"], "assertions": [{"type": "cost_at_most", "usd": 1}]}
            ]
        )
    ).cases[0]
    assert turns.mode == "session"


@pytest.mark.parametrize(
    ("case", "field", "message"),
    [
        ({"route": True}, "cases[1]", 'route: only a job case ("kind": "job") can be routed'),
        ({"kind": "job", "input": ["a", "b"]}, "cases[1]", "a list of turns is a session"),
        ({"kind": "queue"}, "cases[1].kind", "Input should be 'invoke' or 'job'"),
        (
            {"assertions": [{"type": "routed_to", "agent": "returns"}]},
            "cases[1]",
            'routed_to needs "kind": "job"',
        ),
        ({"kind": "job", "assertions": [{"type": "routed_to"}]}, "assertions[0].agent", "required"),
        (
            {"kind": "job", "assertions": [{"type": "job_steps", "include": []}]},
            "assertions[0].include",
            "at least 1 item",
        ),
    ],
)
def test_job_fields_that_do_not_fit_name_the_case_and_field(
    tmp_path: Path, case: dict[str, Any], field: str, message: str
) -> None:
    data = _suite()
    data["cases"].append(
        {
            "id": "bad-job",
            "input": "hi",
            "assertions": [{"type": "cost_at_most", "usd": 1}],
            **case,
        }
    )
    with pytest.raises(SuiteError) as error:
        load_suite(_write(tmp_path, data), display="s.json")
    text = str(error.value)
    assert text.startswith("s.json: case 'bad-job' (cases[1]): ") and field in text
    assert message in text


def test_the_schema_publishes_kind_route_reference_and_the_job_assertions() -> None:
    schema = eval_cli.schema_text()
    for name in ('"kind"', '"route"', '"reference"', '"routed_to"', '"job_steps"'):
        assert name in schema

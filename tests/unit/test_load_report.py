"""``stratus load``'s report from Locust's CSV files, and the run's command line.

The CSV rows are as Locust 2 writes them (copied from real runs): per-name rows, the
``Aggregated`` row, ``TASK`` rows for whole tasks, and failures whose error text is
the scenario's ``ApiError('<code> (HTTP <status>)')``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.load import report
from infra.load.runner import SCENARIOS, LoadPlan, command, parse_duration

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
STATS = f"""{STATS_HEADER}
POST,/v1/agents/{{agent}}/invoke,200,10,48,69.6,13.1,1282.9,167.0,20.0,1.0,48,48,49,51,52,56,56,1300,1300,1300,1300
GET,/v1/jobs/{{job_id}},45,0,39,291.6,8.9,3682.9,492.2,2.5,0.0,39,61,78,88,470,2700,3700,3700,3700,3700,3700
SQS,SendMessage ingest,5,1,160,160,150,170,40,0.5,0.1,160,160,160,160,160,170,170,170,170,170,170
TASK,jobs.complete,4,1,8700,8800,8000,9628,0,0.4,0.1,8700,8700,9600,9600,9600,9600,9600,9600,9600,9600,9600
,Aggregated,254,12,48,100,8.9,9628,200,23.4,1.2,48,50,60,70,400,2000,3700,9600,9600,9600,9600
"""
FAILURES = """Method,Name,Error,Occurrences,First Seen,Last Seen
POST,/v1/agents/{agent}/invoke,ApiError('throttled (HTTP 429)'),6,x,y
POST,/v1/agents/{agent}/invoke,ApiError('unauthorized (HTTP 401)'),3,x,y
POST,/v1/agents/{agent}/invoke,"ConnectionRefusedError(111, 'Connection refused')",1,x,y
SQS,SendMessage ingest,ApiError('ClientError (SendMessage)'),1,x,y
TASK,jobs.complete,ApiError('model_provider_error (job failed)'),1,x,y
"""


def write_run(tmp_path: Path, scenarios: dict[str, object] | None = None) -> tuple[Path, ...]:
    stats, failures, summary = (tmp_path / n for n in ("s.csv", "f.csv", "scenarios.json"))
    stats.write_text(STATS, encoding="utf-8")
    failures.write_text(FAILURES, encoding="utf-8")
    summary.write_text(
        json.dumps(
            {
                "requests": 250,
                "stopped_by": "max_requests",
                "scenarios": scenarios
                or {
                    "invoke": {"tasks": 190, "failed": 10, "cost_usd": 0.0304},
                    "jobs": {"tasks": 3, "failed": 1, "cost_usd": 0.00062},
                    "queue": {"tasks": 0, "failed": 1, "cost_usd": 0.0},
                },
            }
        ),
        encoding="utf-8",
    )
    return stats, failures, summary


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("ApiError('throttled (HTTP 429)')", "throttled"),
        ("ApiError('budget_exceeded (HTTP 429)')", "budget_exceeded"),
        ("CatchResponseError('http_502 (HTTP 502)')", "http_502"),
        ("ApiError('job_timeout (job timeout)')", "job_timeout"),
        ("ConnectionRefusedError(111, 'Connection refused')", "ConnectionRefusedError"),
        ("ApiError('ClientError (SendMessage)')", "ClientError"),
        ("ApiError('!! (HTTP 500)')", "unknown"),
        ("", "unknown"),
    ],
)
def test_the_error_code_is_read_back_from_the_failure_text(error: str, code: str) -> None:
    assert report.error_code(error) == code


def test_the_summary_counts_requests_apart_from_tasks_and_errors_by_code(tmp_path: Path) -> None:
    stats, failures, scenarios = write_run(tmp_path)
    summary = report.summarize(stats, failures, scenarios, plan={"scenarios": ["all"]})

    # The Aggregated row (which counts TASK rows too) is not used: 200 + 45 + 5 requests.
    assert summary["totals"] == {
        "requests": 250,
        "failures": 11,
        "requests_per_s": 23.0,
        "error_rate": 0.044,
    }
    assert [row["name"] for row in summary["tasks"]] == ["jobs.complete"]
    invoke = summary["requests"][0]
    assert (invoke["p50"], invoke["p90"], invoke["p99"]) == (48.0, 52.0, 1300.0)
    assert invoke["error_rate"] == 0.05
    codes = {(e["type"], e["code"]): (e["count"], e["rate"]) for e in summary["errors"]}
    assert codes == {
        ("POST", "throttled"): (6, 0.03),
        ("POST", "unauthorized"): (3, 0.015),
        ("POST", "ConnectionRefusedError"): (1, 0.005),
        ("SQS", "ClientError"): (1, 0.2),
        ("TASK", "model_provider_error"): (1, 0.25),
    }
    assert summary["errors"][0]["code"] == "throttled"  # most frequent first
    assert summary["stopped_by"] == "max_requests"
    assert summary["cost"]["invoke"]["cost_per_task_usd"] == 0.00016
    assert summary["cost"]["queue"]["cost_per_task_usd"] is None  # nothing finished


def test_codes_of_the_same_request_are_added_up(tmp_path: Path) -> None:
    failures = tmp_path / "f.csv"
    failures.write_text(
        "Method,Name,Error,Occurrences\n"
        "POST,/v1/jobs,ApiError('too_many_jobs (HTTP 429)'),2\n"
        "POST,/v1/jobs,CatchResponseError('too_many_jobs (HTTP 429)'),3\n",
        encoding="utf-8",
    )
    assert report.read_errors(failures) == [
        {"type": "POST", "name": "/v1/jobs", "code": "too_many_jobs", "count": 5}
    ]
    assert report.read_errors(tmp_path / "missing.csv") == []


def test_usage_delta_is_the_spend_of_the_run() -> None:
    before = {"cost_usd": "0.001", "agents": {"triage": {"calls": 2, "cost_usd": "0.001"}}}
    after = {
        "key": "2026-12-02",
        "cost_usd": "0.004",
        "agents": {
            "triage": {"calls": 12, "cost_usd": "0.003"},
            "support": {"calls": 1, "cost_usd": "0.001"},
        },
    }
    assert report.usage_delta(before, after) == {
        "cost_usd": "0.003",
        "period_key": "2026-12-02",
        "agents": {
            "triage": {"calls": 10, "cost_usd": "0.002"},
            "support": {"calls": 1, "cost_usd": "0.001"},
        },
    }
    assert report.usage_delta(before, None) == {}


def test_the_markdown_report_has_the_tables_and_links_the_charts(tmp_path: Path) -> None:
    stats, failures, scenarios = write_run(tmp_path)
    summary = report.summarize(
        stats,
        failures,
        scenarios,
        plan={
            "target": "local",
            "host": "http://127.0.0.1:1",
            "scenarios": ["invoke", "jobs"],
            "users": 10,
            "spawn_rate": 5,
            "duration_s": 20,
            "max_requests": 4000,
        },
        usage_after={"key": "2026-12-02", "cost_usd": "0.031", "agents": {}},
    )
    path = report.write(tmp_path / "out", summary)
    text = path.read_text(encoding="utf-8")
    assert "**23.0 requests/s**" in text and "error rate **4.4 %**" in text
    assert "| POST /v1/agents/{agent}/invoke | 200 | 20.00 | 48 | 52 | 1,300 |" in text
    assert "| `throttled` | POST /v1/agents/{agent}/invoke | 6 | 3.0 % |" in text
    assert "| jobs.complete | 4 | 8,700 |" in text
    assert "| invoke | 190 | 10 | 0.030400 | 0.000160 |" in text
    assert "[locust.html](locust.html)" in text
    assert "stopped by max requests" in text
    assert "**$0.031000**" in text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["totals"]["requests"] == 250
    assert "Charts" not in report.render(summary, html_name=None)


def test_a_clean_run_says_so(tmp_path: Path) -> None:
    stats, failures, scenarios = write_run(tmp_path, {"invoke": {"tasks": 0, "failed": 0}})
    failures.write_text("Method,Name,Error,Occurrences\n", encoding="utf-8")
    text = report.render(report.summarize(stats, failures, scenarios))
    assert "## Errors by code\n\nNone." in text


def test_the_command_is_bounded_tagged_and_keeps_the_key_off_it(tmp_path: Path) -> None:
    plan = LoadPlan(
        host="http://127.0.0.1:1/",
        scenarios=("invoke",),
        users=50,
        spawn_rate=25,
        duration_s=20,
        max_requests=4000,
    )
    argv = command(plan, tmp_path)
    joined = " ".join(argv)
    for part in (
        "--headless",
        "-u 50",
        "-r 25",
        "-t 20s",
        "--only-summary",
        "--stratus-max-requests 4000",
        "--tags invoke",
        f"--csv {tmp_path / 'locust'}",
        f"--html {tmp_path / 'locust.html'}",
        "--host http://127.0.0.1:1 ",
    ):
        assert part in joined, part
    every = LoadPlan(
        host="h",
        scenarios=SCENARIOS,
        users=1,
        spawn_rate=1,
        duration_s=1,
        tenant_id="t",
        queue_url="q",
    )
    assert "--tags" not in command(every, tmp_path)  # no tag: every scenario, weighted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scenarios": ("nope",)},
        {"scenarios": ()},
        {"users": 0},
        {"duration_s": 0},
        {"spawn_rate": 0},
        {"scenarios": ("queue",)},  # needs the tenant and the queue
    ],
)
def test_a_plan_out_of_bounds_is_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "host": "h",
        "scenarios": ("invoke",),
        "users": 1,
        "spawn_rate": 1,
        "duration_s": 1,
    }
    with pytest.raises(ValueError):
        LoadPlan(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("2m", 120), ("1h30m", 5400), ("7", 7)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "5x", "1m5", "-3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_cli_refuses_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from infra.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["load", "--scenario", "soak"])
    assert exit_info.value.code == 2
    args = build_parser().parse_args(["load", "--duration", "5s", "--users", "2"])
    assert (args.duration, args.users, args.scenario) == (5, 2, "invoke")

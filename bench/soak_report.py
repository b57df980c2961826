"""The chaos soak's report: the table, the ``## Chaos soak`` section of ``bench/report.md``
(replaced in place, or appended; nothing else in the file changes) and its JSON twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SECTION = "## Chaos soak"


ROWS = (
    "jobs submitted (HTTP / SQS)|{submitted} ({submitted_http} / {submitted_sqs})",
    "succeeded|{succeeded}",
    "failed, with a reason (by error code)|{failed} {codes}",
    "lost (no job record, not in the ingest DLQ)|{lost}",
    "stuck (not final when the wait ended)|{stuck}",
    "second jobs from a redelivery or a repeat|{second_jobs_from_redelivery}",
    "provider calls beyond one per step, outside the crash window"
    "|{extra_provider_calls_outside_window}",
    "provider calls beyond one per step, in the crash window (aimed kills)"
    "|{extra_provider_calls_in_crash_window}",
    "provider calls beyond one per step, after a worker batch timed out (jobs in such batches)"
    "|{extra_provider_calls_after_runtime_timeout} ({worker_batches_timed_out_jobs})",
    "reservations left open (committed != spent)|{reservations_open} (${reservations_open_usd})",
    "steps billed twice|{billed_twice}",
    "workers SIGKILLed mid-step (before / after the model answered)"
    "|{kills_before_answer} / {kills_after_answer}",
    "faults injected (429 / 500 / timeout)|{faults}",
    "model answers by status (499: the caller timed out or was killed)|{statuses}",
    "repeats submitted (same key / same message); HTTP resubmits"
    "|{duplicates_submitted}; {http_resubmits}",
    "jobs claimed more than once (redelivered)|{claimed_more_than_once}",
    "provider calls (answered 200) in all|{provider_calls}",
)


def render_table(result: dict[str, Any]) -> str:
    f = dict(result["figures"])
    f["codes"] = ", ".join(f"`{k}` {v}" for k, v in f["failed_by_code"].items())
    f["statuses"] = ", ".join(f"{k}: {v}" for k, v in f["model_answers_by_status"].items())
    f["faults"] = " / ".join(str(v) for v in f["faults_injected"].values())
    lines = ["| figure | value |", "|---|---|"]
    for row in ROWS:
        name, value = row.split("|", 1)
        lines.append(f"| {name} | {value.format_map(f).strip()} |")
    return "\n".join(lines)


def render_section(result: dict[str, Any]) -> str:
    p, t = result["params"], result["timings"]
    verdict = "hold" if result["zeros_hold"] else "DO NOT hold (see below)"
    text = [
        SECTION,
        "",
        f"`python -m bench.soak --jobs {p['jobs']} --kills {p['kills']}` on {result['date']}: "
        f"{p['jobs']} jobs ({p['order_status_share']:.0%} `order_status`, the rest `triage`), "
        f"{p['faults_per_kind']} faults of each kind, {p['duplicate_share']:.0%} submitted "
        f"twice, job worker timeout {p['worker_timeout_s']} s (visibility "
        f"{6 * p['worker_timeout_s']} s), seed {p['seed']}. Submitting took "
        f"{t.get('submit_s')} s, every job final after {t.get('wait_final_s')} s more, queues "
        f"quiet after {t.get('wait_quiet_s')} s more; {t.get('total_s')} s in all "
        f"(submission held back {t.get('submit_paused_s', 0)} s while more than "
        f"{p.get('max_backlog', '-')} messages were queued). "
        f"The required zeros {verdict}.",
        "",
        render_table(result),
        "",
        "The crash window: a worker killed after the model answered but before the call "
        "ledger entry was written pays once more on the redelivery; the soak kills half "
        "its victims exactly there and counts those calls apart. A worker batch that the "
        "runtime ends at its timeout is the same kind of crash, unaimed: the extra calls of "
        "jobs in such a batch are counted apart too. Every other figure comes "
        "from the tables (jobs, steps, call ledger, usage rollups, budgets), the DLQs and "
        "the fake model's request log, after the queues were quiet.",
    ]
    if result["problems"]:
        text += ["", "First problems found:", ""] + [f"- {p}" for p in result["problems"][:10]]
    return "\n".join(text) + "\n"


def write_report(out: Path, result: dict[str, Any]) -> None:
    """Replace only the ``## Chaos soak`` section (appended if missing); write the JSON twin."""
    write_section(out, result)
    twin = out.with_name("soak.json")
    twin.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


def write_section(out: Path, result: dict[str, Any]) -> None:
    """Replace only the ``## Chaos soak`` section of ``out`` (appended if missing)."""
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    section = render_section(result)
    start = text.find(SECTION + "\n") if text.startswith(SECTION + "\n") else -1
    if start < 0:
        found = text.find("\n" + SECTION + "\n")
        start = found + 1 if found >= 0 else -1
    if start < 0:
        joiner = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        text = text + joiner + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        tail = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section + ("\n" + tail if tail else "")
    out.write_text(text, encoding="utf-8")

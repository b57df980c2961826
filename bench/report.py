"""Renders the benchmark results (the JSON twin) as the Markdown report."""

from __future__ import annotations

from typing import Any

from bench.aws_calls import HEADING as AWS_CALLS_HEADING
from bench.aws_calls import render as render_aws_calls
from bench.sessions import HEADING as SESSIONS_HEADING
from bench.sessions import render as render_sessions

SECTIONS = (
    "## Summary",
    "## How to read this",
    "## 1. Cold start: handler import time",
    "## 2. Per-invoke overhead over a raw openai call",
    "## 3. Benchmark process",
    SESSIONS_HEADING,
    AWS_CALLS_HEADING,
)

HOW_TO_READ = """\
All times are milliseconds of wall-clock time on this machine; compare rows
within one report rather than across machines. **Median** is the typical
value, **p90** the value 90 % of samples stay under. Section 1 starts a fresh
Python interpreter for every sample and times only the `import` of the handler
module, with Powertools Tracer enabled as in Lambda (X-Ray SDK switched off, so
nothing reaches a daemon); bytecode caches and the OS page cache are warm, so a
real Lambda cold start (fresh sandbox, cold disk, smaller CPU share) is slower,
but the ratios between rows carry over. Section 2 runs everything in one warm
process against the offline fake model server on loopback: the raw `openai`
call is the floor, and the difference to it is what Stratus adds per request.
AWS calls there go to moto's in-process mock, and **moto latency is not
DynamoDB latency** (AWS quotes single-digit milliseconds for DynamoDB
reads and writes; measure in your account). No number here is asserted anywhere."""


def _ms(value: float) -> str:
    return f"{value:,.1f}"


def _yes(value: bool) -> str:
    return "**yes**" if value else "no"


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines: list[str] = [
        "# Stratus benchmarks",
        "",
        f"- Date: {meta['date']}",
        f"- Python: {meta['python']} ({meta['implementation']}, `{meta['executable']}`)",
        f"- Platform: {meta['platform']}",
        f"- CPUs: {meta['cpu_count']}"
        + (f" (load average at start: {meta['load_average'][0]})" if meta["load_average"] else ""),
        f"- Mode: {'quick' if meta['quick'] else 'full'}"
        f" (cold-start runs N={meta['runs']}, invokes N={meta['invokes']})",
        f"- Command: `{meta['command']}`",
        "",
    ]
    lines += _summary(data)
    lines += [SECTIONS[1], "", HOW_TO_READ, ""]
    lines += _cold_start(data["cold_start"])
    lines += _invoke(data["invoke"])
    if "sessions" in data:
        lines += render_sessions(data["sessions"])
    if "aws_calls" in data:
        lines += render_aws_calls(data["aws_calls"])
    process = data["process"]
    lines += [
        SECTIONS[4],
        "",
        f"- Peak RSS of the benchmark process: {process['peak_rss_mb']:.1f} MB"
        " (`resource.getrusage`, after all sections; includes moto and the fake server)",
        f"- Total benchmark time: {process['elapsed_s']:.1f} s",
        "",
    ]
    return "\n".join(lines)


def _summary(data: dict[str, Any]) -> list[str]:
    by_label = {m["label"]: m for m in data["cold_start"]["modules"]}
    inv = data["invoke"]

    def imp(label: str) -> str:
        return _ms(by_label[label]["import_ms"]["median"])

    lines = [
        SECTIONS[0],
        "",
        f"- Import (init) median: api {imp('api')} ms, authorizer {imp('authorizer')} ms; "
        f"baselines: bare Powertools {imp('bare_powertools')} ms, naive {imp('naive')} ms.",
        f"- `openai` loaded at import: api {_yes(by_label['api']['openai_imported'])}, "
        f"authorizer {_yes(by_label['authorizer']['openai_imported'])} "
        f"(naive: {_yes(by_label['naive']['openai_imported'])}).",
    ]
    api_first = by_label["api"].get("first_invoke")
    naive_first = by_label["naive"].get("first_invoke")
    if api_first and naive_first:
        lines.append(
            "- Import + first invoke (time to the first model answer) median: api "
            f"{_ms(api_first['import_plus_first_ms']['median'])} ms "
            f"(first invoke alone {_ms(api_first['first_ms']['median'])} ms), naive "
            f"{_ms(naive_first['import_plus_first_ms']['median'])} ms."
        )
    lines += [
        f"- Per-invoke overhead over a raw `openai` call (medians): runtime "
        f"{_ms(inv['overhead_ms']['api'])} ms; runtime + idempotency under moto "
        f"{_ms(inv['overhead_ms']['api_idempotent'])} ms.",
    ]
    if "aws_calls" in data:
        lines.append(_aws_summary(data["aws_calls"]))
    lines.append("")
    return lines


def _aws_summary(aws: dict[str, Any]) -> str:
    sc = aws["scenarios"]
    added = aws["latency"]["added_over_raw_ms"]

    def calls(name: str) -> str:
        s = sc[name]
        return f"{s['aws_calls']} AWS calls, {s['rcu']:g} RCU + {s['wcu']:g} WCU (computed)"

    return (
        f"- Per synchronous invoke: {calls('invoke')}; with an Idempotency-Key "
        f"{calls('invoke_idempotent')}; per session turn ({sc['session_turn']['model_http_calls']}"
        f" model calls) {calls('session_turn')}. Gateway added latency over raw `openai` "
        f"(median of paired differences): {added['gateway_no_tables']['median']:,.1f} ms "
        f"without tables, {added['gateway']['median']:,.1f} ms with its "
        f"{sc['gateway_call']['aws_calls']} DynamoDB calls on moto, "
        f"{added['gateway_replay']['median']:,.1f} ms for a ledger replay."
    )


def _cold_start(cold: dict[str, Any]) -> list[str]:
    lines = [
        SECTIONS[2],
        "",
        f"Fresh interpreter per sample, N={cold['runs']} per module, round-robin order. "
        "*import* is `time.perf_counter()` around the import inside the process; *process* "
        "is the whole `python -c` run seen from outside (interpreter start + import + exit). "
        "*openai loaded* says whether `openai` is in `sys.modules` after the import.",
        "",
        "| module | what | import median | import p90 | process median | process p90 "
        "| peak RSS MB | modules loaded | openai loaded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in cold["modules"]:
        name = f"`{m['module']}`" if m["module"] else "(none)"
        lines.append(
            f"| {name} | {m['description']} | {_ms(m['import_ms']['median'])} "
            f"| {_ms(m['import_ms']['p90'])} | {_ms(m['process_ms']['median'])} "
            f"| {_ms(m['process_ms']['p90'])} | {m['peak_rss_mb']:.1f} | {m['module_count']} "
            f"| {_yes(m['openai_imported'])} |"
        )
    by_label = {m["label"]: m for m in cold["modules"]}
    lines += ["", "Relative to the baselines (import medians):", ""]
    floor = by_label["bare_powertools"]["import_ms"]["median"]
    naive = by_label["naive"]["import_ms"]["median"]
    for label in ("api", "authorizer"):
        own = by_label[label]["import_ms"]["median"]
        lines.append(
            f"- `{by_label[label]['module']}`: {_ms(own - floor)} ms above bare Powertools, "
            f"{_ms(naive - own)} ms below the naive handler "
            f"({own / naive:.0%} of its import time)."
        )
    lines += [
        "",
        "### Import + first invoke",
        "",
        "Separate fresh-interpreter runs (same N) that, after the timed import, call "
        "`lambda_handler` twice with the triage invoke event (no Idempotency-Key) against "
        "the offline fake model server; the handlers that answer it without AWS only "
        "(the authorizer needs its DynamoDB table). *first* is what a cold start adds after "
        "init: lazy imports and clients built on first use. *import + first* (median of the "
        "per-run sums) is the time to the first response, init included.",
        "",
        "| module | import + first median | import + first p90 | first invoke median "
        "| second invoke median | peak RSS MB | openai loaded after |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in cold["modules"]:
        first = m.get("first_invoke")
        if not first:
            continue
        total = first["import_plus_first_ms"]
        lines.append(
            f"| `{m['module']}` | {_ms(total['median'])} | {_ms(total['p90'])} "
            f"| {_ms(first['first_ms']['median'])} | {_ms(first['second_ms']['median'])} "
            f"| {first['peak_rss_mb']:.1f} | {_yes(first['loaded_after']['openai'])} |"
        )
    lines += [
        "",
        "Imports done during the first invoke (one `-X importtime` run; indicative only):",
        "",
        "| module | imported during first invoke (ms) | heaviest lazy imports (cumulative ms) |",
        "|---|---:|---|",
    ]
    for m in cold["modules"]:
        first = m.get("first_invoke")
        if not first:
            continue
        imports = first["imports"]
        heaviest = ", ".join(
            f"`{d['module']}` {_ms(d['ms'])}" for d in imports["heaviest_direct_imports"]
        )
        lines.append(f"| `{m['module']}` | {_ms(imports['total_ms'])} | {heaviest or '-'} |")
    lines += [
        "",
        "Where the time goes (one extra `python -X importtime` run per module; indicative only, "
        "importtime itself slows imports). *Self time by package* adds up to the whole import; "
        "the measured module's own package includes work its body does at import "
        "(e.g. creating clients).",
        "",
        "| module | heaviest direct imports (cumulative ms) | self time by package (ms) |",
        "|---|---|---|",
    ]
    for m in cold["modules"]:
        if not m["module"]:
            continue
        direct = ", ".join(
            f"`{d['module']}` {_ms(d['ms'])}" for d in m.get("heaviest_direct_imports", [])
        )
        packages = ", ".join(
            f"`{p['package']}` {_ms(p['ms'])}" for p in m.get("self_ms_by_package", [])
        )
        lines.append(f"| `{m['module']}` | {direct} | {packages} |")
    lines += ["", "Heavy packages present after the import:", ""]
    watched = list(cold["modules"][0]["loaded"])
    lines += [
        "| module | " + " | ".join(f"`{w}`" for w in watched) + " |",
        "|---|" + "---|" * len(watched),
    ]
    for m in cold["modules"]:
        name = f"`{m['module']}`" if m["module"] else "(none)"
        lines.append(
            f"| {name} | " + " | ".join("yes" if m["loaded"][w] else "-" for w in watched) + " |"
        )
    env = ", ".join(f"`{k}={v}`" for k, v in cold["env"].items())
    lines += ["", f"Environment of the import processes: {env}.", ""]
    return lines


CASE_TITLES = {
    "raw": "(a) raw `openai` `chat.completions.parse`",
    "api": "(b) API handler invoke, no Idempotency-Key",
    "api_idempotent": "(c) API handler invoke with a fresh Idempotency-Key",
}


def _invoke(inv: dict[str, Any]) -> list[str]:
    lines = [
        SECTIONS[3],
        "",
        f"Agent `{inv['agent']}`, model `{inv['model']}` on the offline fake model server "
        f"(`{inv['fake_model_url']}`), same messages, JSON-schema response format and "
        f"`max_completion_tokens={inv['max_completion_tokens']}` in every case. "
        f"{inv['warmup']} warm-up calls of each case, then N={inv['invokes']} per case, "
        "interleaved. Handler runs use moto for AWS, `POWERTOOLS_TRACE_DISABLED=1` and "
        "`POWERTOOLS_LOG_LEVEL=WARNING`; their stdout (logs, EMF metrics) goes to a file.",
        "",
        "| case | median | p90 | min | max | model HTTP calls | AWS API calls per call |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for case, title in CASE_TITLES.items():
        s = inv["cases"][case]
        per_call = inv["per_call"][case]
        aws = ", ".join(per_call["aws_api_calls"]) or "none"
        lines.append(
            f"| {title} | {_ms(s['median'])} | {_ms(s['p90'])} | {_ms(s['min'])} "
            f"| {_ms(s['max'])} | {per_call['model_http_calls']} | {aws} |"
        )
    over = inv["overhead_ms"]
    paired = inv["overhead_paired_median_ms"]
    lines += [
        "",
        "| overhead over (a) | median(case) - median(a) | median of paired differences |",
        "|---|---:|---:|",
        f"| (b) - (a): the runtime | {_ms(over['api'])} ms | {_ms(paired['api'])} ms |",
        f"| (c) - (a): runtime + idempotency (moto) | {_ms(over['api_idempotent'])} ms "
        f"| {_ms(paired['api_idempotent'])} ms |",
        "",
        f"The idempotency part, (c) - (b), is {_ms(over['api_idempotent'] - over['api'])} ms "
        "here; it is moto's in-process latency, not DynamoDB's. Handler stdout per invoke: "
        f"{inv['handler_stdout_bytes_per_invoke']:.0f} bytes (EMF metrics and logs).",
        "",
    ]
    return lines

"""The run's reports: JUnit XML (CI), Markdown (people) and JSON (tools)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree as ET

from stratus.evals.gate import AgentVerdict
from stratus.evals.runner import CaseResult

_ANSWER_CHARS = 300


def _answer(case: CaseResult) -> str:
    sample = case.first_failure() or (case.samples[0] if case.samples else None)
    if sample is None or sample.observation is None:
        return ""
    text = sample.observation.text
    return text if len(text) <= _ANSWER_CHARS else text[: _ANSWER_CHARS - 3] + "..."


def failure_text(case: CaseResult) -> str:
    """Why a case failed: the first failing sample's error or failed assertions."""
    sample = case.first_failure()
    if sample is None:
        return ""
    if sample.error:
        return sample.error
    return "; ".join(f"{a.type}: {a.message}" for a in sample.failures)


def judge_text(case: CaseResult) -> str:
    """The judge's verdicts on the case's first sample: ``llm_judge 0.40: reason``."""
    sample = case.first_failure() or (case.samples[0] if case.samples else None)
    if sample is None:
        return ""
    out = []
    for result in sample.assertions:
        if result.type != "llm_judge" or result.status == "failed":
            continue  # a failed judgement is in failure_text already
        score = getattr(result, "score", None)
        shown = "skipped" if score is None else f"{score:.2f}"
        out.append(f"llm_judge {shown}: {getattr(result, 'reason', '') or result.message}")
    return "; ".join(out)


def to_json(verdicts: Sequence[AgentVerdict], *, elapsed_s: float, offline: bool) -> dict[str, Any]:
    return {
        "passed": all(v.passed for v in verdicts),
        "offline": offline,
        "elapsed_s": round(elapsed_s, 3),
        "cost_usd": sum(v.cost_usd for v in verdicts),
        "judge_cost_usd": sum(v.judge_cost_usd for v in verdicts),
        "agents": [v.to_json() for v in verdicts],
    }


def to_junit(verdicts: Sequence[AgentVerdict], *, elapsed_s: float) -> str:
    root = ET.Element("testsuites", name="stratus-eval", time=f"{elapsed_s:.3f}")
    for verdict in verdicts:
        failures = sum(1 for c in verdict.cases if not c.passed)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"eval.{verdict.agent}",
            tests=str(len(verdict.cases)),
            failures=str(failures),
            skipped=str(sum(1 for c in verdict.cases if c.skipped)),
        )
        props = ET.SubElement(suite, "properties")
        for name, value in (
            ("score", f"{verdict.score:.2f}"),
            (
                "baseline_score",
                "" if verdict.baseline_score is None else f"{verdict.baseline_score:.2f}",
            ),
            ("model", verdict.model),
            ("release", verdict.release),
            ("verdict", "pass" if verdict.passed else "fail: " + " | ".join(verdict.reasons)),
        ):
            ET.SubElement(props, "property", name=name, value=value)
        for case in verdict.cases:
            latency = sum(s.observation.latency_s for s in case.samples if s.observation)
            element = ET.SubElement(
                suite,
                "testcase",
                classname=f"eval.{verdict.agent}",
                name=case.case.id,
                time=f"{latency:.3f}",
            )
            if not case.passed:
                failure = ET.SubElement(
                    element,
                    "failure",
                    message=f"{case.passes}/{case.k} samples passed (require {case.case.require})",
                )
                failure.text = f"{failure_text(case)}\nanswer: {_answer(case)}"
            elif case.skipped:
                ET.SubElement(element, "skipped", message="LLM-judge assertions only")
            ET.SubElement(element, "system-out").text = f"pass rate {case.passes}/{case.k}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cost_summary(verdicts: Sequence[AgentVerdict]) -> str:
    """``agent cost $X, judge cost $Y``: the judge's spend is reported apart."""
    agent = sum(v.cost_usd for v in verdicts)
    judge = sum(v.judge_cost_usd for v in verdicts)
    return f"agent cost ${agent:.6f}, judge cost ${judge:.6f}"


def to_markdown(verdicts: Sequence[AgentVerdict], *, elapsed_s: float, offline: bool) -> str:
    overall = "PASS" if all(v.passed for v in verdicts) else "FAIL"
    lines = [
        f"# Eval report: {overall}",
        "",
        f"{sum(len(v.cases) for v in verdicts)} cases, {elapsed_s:.1f} s, "
        f"{cost_summary(verdicts)}" + (" (offline fake model)" if offline else ""),
        "",
    ]
    if offline:
        lines += [
            "> Offline, the fake model cannot judge quality: these suites prove the harness,",
            "> the output schemas, tool use and cost limits, not the answers' quality.",
            "",
        ]
    lines += [
        "| agent | score | baseline | threshold | verdict | cost (USD) | judge cost (USD) |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        base = "-" if v.baseline_score is None else f"{v.baseline_score:.2f}"
        verdict = "pass" if v.passed else "FAIL"
        lines.append(
            f"| {v.agent} | {v.score:.2f} | {base} | {v.threshold:.2f} | {verdict} "
            f"| {v.cost_usd:.6f} | {v.judge_cost_usd:.6f} |"
        )
    for v in verdicts:
        lines += ["", f"## {v.agent} (release {v.release}, model {v.model})", ""]
        for reason in v.reasons:
            lines.append(f"- **{_cell(reason)}**")
        for note in v.notes:
            lines.append(f"- note: {_cell(note)}")
        if v.reasons or v.notes:
            lines.append("")
        lines += [
            "| case | result | pass rate | failed assertion | answer |",
            "|---|---|---|---|---|",
        ]
        for case in v.cases:
            result = "skipped" if case.skipped else ("pass" if case.passed else "FAIL")
            detail = "" if case.passed else failure_text(case)
            answer = "" if case.passed else _answer(case)
            judged = judge_text(case)
            if judged:
                detail = f"{detail}; {judged}" if detail else judged
            lines.append(
                f"| {case.case.id} | {result} | {case.passes}/{case.k} | {_cell(detail)} "
                f"| {_cell(answer)} |"
            )
    return "\n".join(lines) + "\n"


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"

"""The demo's release steps: one canary rolled back on cost per task, one promoted.

Both go through ``stratus canary`` itself (``infra.canary_cli``) on the demo's local
cloud: ``tier=smart`` of triage (the smart model costs several times the fast one per
task, over the gate's ``max_cost_per_task_ratio``) and ``prompt_version=v2`` (a
harmless rewording of the prompt). Traffic is the CLI's own (``--drive``), real HTTP.
"""

from __future__ import annotations

import argparse
import io
from typing import Any

from infra import canary_cli
from infra.local.facts import LocalFacts

#: Half the traffic for the time 24 requests take; 10 answers are enough to judge here.
GATE = ("--weight", "50", "--for", "0s", "--interval", "1s", "--drive", "24")
#: Latency on a laptop running the whole cloud is noise: judge errors, cost and evals.
GATE_MIN = ("--min-requests", "10", "--max-p90-latency-ratio", "10")


def _canary(facts: LocalFacts, candidate: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="stratus")
    canary_cli.add_parser(parser.add_subparsers())
    argv = ["canary", "--agent", "triage", "--candidate", candidate, *GATE, *GATE_MIN]
    args = parser.parse_args(argv)
    out = io.StringIO()
    facts_json: dict[str, Any] = dict(facts.__dict__)
    code = canary_cli.run(args, out=out, facts=facts_json)
    return code, out.getvalue()


def _verdict(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(("promoted", "rolled back"))]
    return lines[-1][:160] if lines else text[-160:]


def rolled_back(facts: LocalFacts) -> str:
    code, text = _canary(facts, "tier=smart")
    assert code == 1, f"exit {code}: {text[-400:]}"
    assert "cost_per_task" in text, text[-400:]
    return _verdict(text)


def promoted(facts: LocalFacts) -> str:
    code, text = _canary(facts, "prompt_version=v2")
    assert code == 0, f"exit {code}: {text[-400:]}"
    return _verdict(text)

"""``stratus eval``: run the agents' behavioural suites and gate on the results.

Suites are data (``functions/agents/<agent>/evals/*.json``, schema in
``evals/schema.json``, or any file given with ``--suite``). Where the cases run
(``infra.eval_targets``): in this process through a ``stratus.composition.Runtime``
on in-process moto, against the offline fake model or an OpenAI-compatible
endpoint (the default); a running local cloud (``--api``); a deployed stage
(``--stack``); one published function version (``--version``). ``llm_judge``
assertions are scored by a judge model through this process's gateway, their
cost reported apart. With ``--stack``/``--version`` (or ``--metrics``) the scores
go to CloudWatch as ``EvalScore`` and ``EvalPassRate``. Exit codes: 0 the gate
passes, 1 it fails (the report names the agent, the cases and the score drop),
2 a suite or an option is unusable. ``stratus eval capture`` turns stored
interactions into candidate cases (``infra.eval_capture``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from infra import eval_targets as targets
from infra.eval_targets import UsageError
from infra.paths import FUNCTIONS_DIR, REPO_ROOT
from stratus.evals import gate, reports
from stratus.evals.models import (
    BASELINE_FILE,
    LlmJudge,
    Suite,
    SuiteError,
    load_suite,
    suite_files,
    suite_json_schema,
)
from stratus.evals.runner import Planned, plan, run_cases

AGENTS_DIR = FUNCTIONS_DIR / "agents"
SCHEMA_FILE = REPO_ROOT / "evals" / "schema.json"
LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
__all__ = ["AGENTS_DIR", "LOCAL_FACTS", "SCHEMA_FILE", "UsageError", "add_parser", "main"]

_SUITE_HELP = (
    "run this suite file (repeatable) instead of the agents' own (with --agent: as well "
    "as theirs); the agent is the file's 'agent'. The regression check against the "
    "agent's committed baseline is skipped unless the file is in the agent's own evals dir"
)


def add_parser(commands: Any) -> None:
    """Register ``eval`` (and ``eval capture``) on the ``stratus`` command's sub-parsers."""
    p = commands.add_parser("eval", help="run the agents' eval suites and gate on the scores")
    p.add_argument("--agent", action="append", help="only this agent (repeatable)")
    p.add_argument("--suite", action="append", type=Path, metavar="FILE", help=_SUITE_HELP)
    p.add_argument("--tag", help="only the cases with this tag, e.g. critical")
    p.add_argument("--samples", type=int, help="run every case this many times (pass@k)")
    p.add_argument("--concurrency", type=int, default=4, help="samples run at once (default 4)")
    p.add_argument("--junit", type=Path, help="write a JUnit XML report here")
    p.add_argument("--report", type=Path, help="write a Markdown report here")
    p.add_argument("--json", type=Path, help="write a JSON report here")
    p.add_argument("--update-baseline", action="store_true", help="rewrite evals/baseline.json")
    p.add_argument(
        "--agents-dir",
        type=Path,
        default=AGENTS_DIR,
        help="where <agent>/evals/*.json live (default functions/agents)",
    )
    where = p.add_argument_group("targets (default: this process, offline fake model)")
    where.add_argument(
        "--api",
        nargs="?",
        const="",
        metavar="URL",
        help="run against a running local cloud's API (URL and key from .stratus/local.json)",
    )
    where.add_argument(
        "--key", help=f"the tenant API key for --api / --stack (--stack: or ${targets.API_KEY_ENV})"
    )
    where.add_argument(
        "--stack", help="a deployed stage: its API URL from the stack's ApiUrl output"
    )
    where.add_argument("--stage", help="the stage whose stack (Stratus-<stage>) --stack means")
    where.add_argument("--region", help="AWS region of --stack / --version / --metrics")
    where.add_argument(
        "--version",
        metavar="V",
        help="run against published version V of the agent's function (Lambda Invoke with "
        "Qualifier=V; with --stack, or --function NAME); no API key: IAM is the authority",
    )
    where.add_argument("--function", metavar="NAME", help="the function of --version (one agent)")
    where.add_argument(
        "--tenant",
        default=None,
        help="the tenant id --version's requests carry (default: eval-tenant)",
    )
    p.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="publish EvalScore / EvalPassRate to CloudWatch (default: on with --stack/--version)",
    )
    p.add_argument(
        "--write-schema", action="store_true", help="regenerate evals/schema.json and exit"
    )
    p.set_defaults(func=main)
    sub = p.add_subparsers(dest="eval_command", metavar="{capture}")
    capture = _capture_module()
    if capture is not None:
        capture.add_parser(sub)


def _capture_module() -> Any:
    """``infra.eval_capture`` (``stratus eval capture``), if it is there."""
    try:
        return importlib.import_module("infra.eval_capture")
    except ModuleNotFoundError as error:
        if error.name != "infra.eval_capture":
            raise
        return None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _accept(
    path: Path, suite: Suite, suites: dict[str, list[Suite]], errors: list[str], *, expected: str
) -> None:
    """Add ``suite`` to ``suites`` unless it breaks a rule (then say why in ``errors``)."""
    from functions.agents import load_agent

    name = suite.agent
    if name != expected:
        errors.append(
            f"{_display(path)}: agent: the suite is for {name!r} but lives under agent {expected!r}"
        )
        return
    turns = [i for i, case in enumerate(suite.cases) if isinstance(case.input, list)]
    if turns and load_agent(name).sessions is None:
        case = suite.cases[turns[0]]
        errors.append(
            f"{_display(path)}: case {case.id!r} (cases[{turns[0]}]): "
            f"cases[{turns[0]}].input: a list of turns needs an agent with "
            f"sessions; {name} has none"
        )
        return
    taken = {case.id for other in suites.get(name, []) for case in other.cases}
    twice = sorted(taken & {case.id for case in suite.cases})
    if twice:
        errors.append(
            f"{_display(path)}: cases: id {twice[0]!r} is also used by another "
            f"suite of {name} (case ids are unique per agent: the baseline keys on them)"
        )
        return
    suites.setdefault(name, []).append(suite)


def load_suites(
    agents_dir: Path,
    only: list[str] | None,
    extra: Sequence[Path] = (),
    *,
    outside: set[str] | None = None,
) -> dict[str, list[Suite]]:
    """Agent -> its suites; every file is validated before anything runs.

    ``extra`` (``--suite``): files run instead of the agents' own (with ``only``: as
    well as theirs). ``outside`` collects the agents with a file from outside their own
    evals dir (their regression check against the baseline is skipped).
    """
    from functions.agents import agent_names

    known = agent_names()
    for name in only or []:
        if name not in known:
            raise UsageError(f"--agent {name}: no such agent (agents: {', '.join(known)})")
    suites: dict[str, list[Suite]] = {}
    errors: list[str] = []
    own: set[Path] = set()
    for name in only or ([] if extra else known):
        for path in suite_files(agents_dir / name / "evals"):
            own.add(path.resolve())
            try:
                suite = load_suite(path, display=_display(path))
            except SuiteError as error:
                errors.append(str(error))
                continue
            _accept(path, suite, suites, errors, expected=name)
    for path in extra:
        if path.resolve() in own:
            continue  # already run as the agent's own
        try:
            suite = load_suite(path, display=_display(path))
        except SuiteError as error:
            errors.append(str(error))
            continue
        if suite.agent not in known:
            errors.append(f"{_display(path)}: agent: no such agent {suite.agent!r}")
            continue
        home = (agents_dir / suite.agent / "evals").resolve()
        if path.resolve().parent != home and outside is not None:
            outside.add(suite.agent)
        _accept(path, suite, suites, errors, expected=suite.agent)
    if errors:
        raise UsageError("\n".join(errors))
    if not suites:
        raise UsageError(f"no eval suites found under {_display(agents_dir)}/<agent>/evals/")
    return suites


@contextlib.contextmanager
def _quiet_runtime() -> Iterator[None]:
    """Keep the runtime's log lines and EMF metrics (stdout in Lambda) out of the report."""
    from stratus.observability import logger

    level = logger.log_level
    logger.setLevel("ERROR")
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        logger.setLevel(level)


class _Progress:
    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int, label: str) -> None:
        if self.tty:
            print(f"\r[eval] {done}/{total} {label[:60]:<60}", end="", file=sys.stderr, flush=True)
            if done == total:
                print(file=sys.stderr)
            return
        step = max(1, total // 10)
        if done == total or done // step != self.last:
            self.last = done // step
            print(f"[eval] {done}/{total} samples ({label})", file=sys.stderr, flush=True)


def schema_text() -> str:
    """``evals/schema.json`` as it must read (generated from ``stratus.evals.models.Suite``)."""
    return json.dumps(suite_json_schema(), indent=2, sort_keys=True) + "\n"


def _mode(args: argparse.Namespace) -> str:
    """in_process | api | stack | version, after checking the options fit together."""
    stack = args.stack or (f"Stratus-{args.stage}" if args.stage else None)
    args.stack = stack
    if args.version is not None:
        if args.api is not None:
            raise UsageError("--version runs against a function version: drop --api")
        if stack is None and args.function is None:
            raise UsageError("--version needs --stack NAME (or --stage S) or --function NAME")
        return "version"
    if args.function is not None:
        raise UsageError("--function needs --version V")
    if stack is not None:
        if args.api is not None:
            raise UsageError("--stack and --api are two targets: choose one")
        return "stack"
    if args.api is not None or args.key is not None:
        return "api"
    return "in_process"


def _workflows(agents: Sequence[str]) -> dict[str, Any]:
    """Agent -> its supervised workflow (the agent package's ``WORKFLOW``), if any."""
    out = {}
    for name in agents:
        workflow = getattr(importlib.import_module(f"functions.agents.{name}"), "WORKFLOW", None)
        if workflow is not None:
            out[name] = workflow
    return out


def _needs_judge(planned: Sequence[Planned]) -> bool:
    return any(isinstance(a, LlmJudge) for item in planned for a in item.case.assertions)


@contextlib.contextmanager
def _target(
    args: argparse.Namespace, mode: str, agents: list[str], planned: Sequence[Planned]
) -> Iterator[tuple[Any, bool, Any]]:
    """(target, offline, judge): where the cases run, and the judge on this process's gateway."""
    with contextlib.ExitStack() as stack:
        if mode == "in_process":
            runtime, offline = stack.enter_context(targets.in_process_runtime())
            from functions.agents import load_agent
            from stratus.evals.target import InProcessTarget

            specs = {name: load_agent(name) for name in agents}
            workflows = _workflows(agents)
            target = (
                InProcessTarget(runtime, specs, workflows=workflows)
                if workflows
                else InProcessTarget(runtime, specs)
            )
            yield target, offline, targets.judge_for(runtime)
            return
        # Remote targets' clients are made here, before the judge's runtime mocks AWS.
        if mode == "api":
            shown = _display(LOCAL_FACTS)
            target, offline = targets.api_target(agents, args.api, args.key, LOCAL_FACTS, shown)
        elif mode == "stack":
            session = targets.aws_session(args.region)
            target, offline = targets.stack_api_target(agents, session, args.stack, args.key)
        else:
            session = targets.aws_session(args.region)
            target, offline = targets.version_target(
                agents,
                session,
                args.version,
                stack=args.stack,
                function=args.function,
                tenant=args.tenant or targets.EVAL_TENANT,
            )
        judge = None
        if _needs_judge(planned):
            runtime, _ = stack.enter_context(targets.in_process_runtime(remote=mode != "api"))
            judge = targets.judge_for(runtime)
        yield target, offline, judge


def _publish_metrics(args: argparse.Namespace, verdicts: list[gate.AgentVerdict]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from stratus.evals.metrics import CloudWatchSink, publish

    client = targets.aws_session(args.region).client("cloudwatch")
    try:
        sent = publish(verdicts, CloudWatchSink(client))
    except (BotoCoreError, ClientError) as error:
        raise UsageError(f"--metrics: EvalScore/EvalPassRate not published: {error}") from None
    names = ", ".join(f"{m.agent}@{m.release}" for m in sent)
    print(f"[eval] metrics EvalScore, EvalPassRate published for {names}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.write_schema:
        SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
        print(f"wrote {_display(SCHEMA_FILE)}", file=sys.stderr)
        return 0
    if args.samples is not None and not 1 <= args.samples <= 100:
        raise UsageError("--samples must be between 1 and 100")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.update_baseline and (args.tag or args.samples):
        raise UsageError("--update-baseline needs the whole suites: drop --tag and --samples")
    mode = _mode(args)
    outside: set[str] = set()
    suites = load_suites(args.agents_dir, args.agent, args.suite or (), outside=outside)
    if args.update_baseline and outside:
        raise UsageError(
            "--update-baseline: a --suite file outside the agent's evals dir has no baseline "
            f"({', '.join(sorted(outside))})"
        )
    planned = plan(
        [s for agent in suites for s in suites[agent]], tag=args.tag, samples=args.samples
    )
    if not planned:
        raise UsageError(f"no case has the tag {args.tag!r}")
    agents = sorted({item.agent for item in planned})
    started = time.perf_counter()
    with _target(args, mode, agents, planned) as (target, offline, judge):
        with _quiet_runtime():
            results = run_cases(
                planned, target, concurrency=args.concurrency, progress=_Progress(), judge=judge
            )
        verdicts = []
        for agent in agents:
            baseline_path = args.agents_dir / agent / "evals" / BASELINE_FILE
            verdict = gate.judge(
                agent,
                suites[agent],
                [r for r in results if r.agent == agent],
                model=target.model(agent) + (" (offline fake model)" if offline else ""),
                release=target.release(agent),
                baseline=None if agent in outside else gate.load_baseline(baseline_path),
            )
            if agent in outside:
                verdict.notes.append(
                    "no regression check against the baseline: a --suite file is outside "
                    "the agent's evals dir"
                )
            verdicts.append(verdict)
    elapsed = time.perf_counter() - started
    if args.update_baseline:
        for verdict in verdicts:
            path = args.agents_dir / verdict.agent / "evals" / BASELINE_FILE
            gate.write_baseline(path, verdict.as_baseline())
            print(
                f"baseline written: {_display(path)} (score {verdict.score:.2f})", file=sys.stderr
            )
    _write_reports(args, verdicts, elapsed, offline)
    if args.metrics if args.metrics is not None else mode in ("stack", "version"):
        _publish_metrics(args, verdicts)
    for v in verdicts:
        base = "" if v.baseline_score is None else f" (baseline {v.baseline_score:.2f})"
        status = "pass" if v.passed else "FAIL"
        print(f"{v.agent}: score {v.score:.2f}{base}, {len(v.cases)} cases: {status}")
        for reason in v.reasons:
            print(f"  - {reason}")
    total = sum(len(v.cases) for v in verdicts)
    print(
        f"{total} cases in {elapsed:.1f} s; {reports.cost_summary(verdicts)}"
        + (" (offline fake model)" if offline else "")
    )
    if args.update_baseline:
        return 0
    return 0 if all(v.passed for v in verdicts) else 1


def _write_reports(
    args: argparse.Namespace, verdicts: list[gate.AgentVerdict], elapsed: float, offline: bool
) -> None:
    outputs = (
        (args.junit, lambda: reports.to_junit(verdicts, elapsed_s=elapsed)),
        (args.report, lambda: reports.to_markdown(verdicts, elapsed_s=elapsed, offline=offline)),
        (
            args.json,
            lambda: reports.dumps(reports.to_json(verdicts, elapsed_s=elapsed, offline=offline)),
        ),
    )
    for path, render in outputs:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(), encoding="utf-8")


def main(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "eval_command", None) == "capture":
            capture = _capture_module()
            assert capture is not None  # the sub-command exists only when the module does
            return int(capture.run(args))
        return run(args)
    except UsageError as error:
        print(f"stratus eval: {error}", file=sys.stderr)
        return 2

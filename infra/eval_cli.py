"""``stratus eval``: run the agents' behavioural suites and gate on the results.

Suites are data (``functions/agents/<agent>/evals/*.json``, schema in
``evals/schema.json``). The cases run in this process through a
``stratus.composition.Runtime`` (the same runner, gateway and tools a function
uses) on in-process moto with the stack's tables, against the offline fake model
(started here) or, when ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` is set, that
OpenAI-compatible endpoint. Exit codes: 0 the gate passes, 1 it fails (the
report names the agent, the cases and the score drop), 2 a suite or an option
is unusable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from infra.paths import FUNCTIONS_DIR, REPO_ROOT
from stratus.evals import gate, reports
from stratus.evals.models import (
    BASELINE_FILE,
    Suite,
    SuiteError,
    load_suite,
    suite_files,
    suite_json_schema,
)
from stratus.evals.runner import plan, run_cases

AGENTS_DIR = FUNCTIONS_DIR / "agents"
SCHEMA_FILE = REPO_ROOT / "evals" / "schema.json"
LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
OFFLINE_KEY = "sk-eval-offline"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
}
_AWS_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB")
#: The orders the ``order_status`` suites look up (the eval tenant's, like the demo's).
EVAL_ORDERS: tuple[dict[str, Any], ...] = (
    {
        "order_id": "A-1001",
        "status": "in_transit",
        "carrier": "DHL",
        "eta": "2026-11-24",
        "items": ["running shoes"],
    },
    {
        "order_id": "A-1002",
        "status": "delivered",
        "carrier": "UPS",
        "eta": "2026-11-18",
        "items": ["rain jacket", "socks"],
    },
)

#: An order of another tenant: the suites check that the eval tenant never sees it.
OTHER_TENANT = "eval-other-tenant"
OTHER_TENANT_ORDER = {
    "order_id": "C-3003",
    "status": "in_transit",
    "carrier": "FedEx",
    "eta": "2026-12-02",
    "items": ["espresso machine"],
}


class UsageError(Exception):
    """Exit code 2: a suite file or an option cannot be used."""


def add_parser(commands: Any) -> None:
    """Register ``eval`` on the ``stratus`` command's sub-parsers."""
    p = commands.add_parser("eval", help="run the agents' eval suites and gate on the scores")
    p.add_argument("--agent", action="append", help="only this agent (repeatable)")
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
    p.add_argument(
        "--api",
        nargs="?",
        const="",
        metavar="URL",
        help="run against a running local cloud's API (URL and key from .stratus/local.json)",
    )
    p.add_argument("--key", help="the tenant API key for --api (default: the demo tenant's)")
    p.add_argument(
        "--write-schema", action="store_true", help="regenerate evals/schema.json and exit"
    )
    p.set_defaults(func=main)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_suites(agents_dir: Path, only: list[str] | None) -> dict[str, list[Suite]]:
    """Agent -> its suites; every file is validated before anything runs."""
    from functions.agents import agent_names, load_agent

    known = agent_names()
    for name in only or []:
        if name not in known:
            raise UsageError(f"--agent {name}: no such agent (agents: {', '.join(known)})")
    suites: dict[str, list[Suite]] = {}
    errors: list[str] = []
    for name in only or known:
        for path in suite_files(agents_dir / name / "evals"):
            try:
                suite = load_suite(path, display=_display(path))
            except SuiteError as error:
                errors.append(str(error))
                continue
            if suite.agent != name:
                errors.append(
                    f"{_display(path)}: agent: the suite is for {suite.agent!r} "
                    f"but lives under agent {name!r}"
                )
                continue
            turns = [i for i, case in enumerate(suite.cases) if isinstance(case.input, list)]
            if turns and load_agent(name).sessions is None:
                case = suite.cases[turns[0]]
                errors.append(
                    f"{_display(path)}: case {case.id!r} (cases[{turns[0]}]): "
                    f"cases[{turns[0]}].input: a list of turns needs an agent with "
                    f"sessions; {name} has none"
                )
                continue
            taken = {case.id for other in suites.get(name, []) for case in other.cases}
            twice = sorted(taken & {case.id for case in suite.cases})
            if twice:
                errors.append(
                    f"{_display(path)}: cases: id {twice[0]!r} is also used by another "
                    f"suite of {name} (case ids are unique per agent: the baseline keys on them)"
                )
                continue
            suites.setdefault(name, []).append(suite)
    if errors:
        raise UsageError("\n".join(errors))
    if not suites:
        raise UsageError(f"no eval suites found under {_display(agents_dir)}/<agent>/evals/")
    return suites


@contextlib.contextmanager
def _environment(values: Mapping[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*values, *unset)}
    try:
        for name in unset:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def model_endpoint() -> tuple[str | None, str | None]:
    """(base URL, key) of a real endpoint from the environment, or (None, None): offline."""
    url = os.environ.get("STRATUS_OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    key = os.environ.get("STRATUS_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if not url and not key:
        return None, None
    return url or None, key or OFFLINE_KEY


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


@contextlib.contextmanager
def in_process_target(agents: list[str]) -> Iterator[tuple[Any, bool]]:
    """(target, offline): a Runtime on in-process moto and the model endpoint."""
    import boto3
    from moto import mock_aws

    from functions.agents import load_agent
    from infra.definitions import TABLES, create_table_kwargs
    from infra.local import moto_atomic
    from infra.local.fake_model import FakeModelServer
    from stratus.aws import AwsClients
    from stratus.composition import Runtime
    from stratus.config import Settings
    from stratus.evals.target import EVAL_TENANT, InProcessTarget

    url, key = model_endpoint()
    offline = url is None and key is None
    with contextlib.ExitStack() as stack:
        if offline:
            url = stack.enter_context(FakeModelServer(quiet=True)).url
            key = OFFLINE_KEY
        stack.enter_context(_environment(_AWS_ENV, _AWS_UNSET))
        stack.enter_context(mock_aws())
        moto_atomic.install()
        stack.callback(moto_atomic.uninstall)
        dynamodb = boto3.client("dynamodb")
        names = {t.name: f"stratus-eval-{t.name}" for t in TABLES}
        for table in TABLES:
            dynamodb.create_table(**create_table_kwargs(table, names[table.name]))
        tables = {t.env_var.removeprefix("STRATUS_").lower(): names[t.name] for t in TABLES}
        fields: dict[str, Any] = {
            "stage": "eval",
            "openai_api_key": key or OFFLINE_KEY,
            "openai_base_url": url,
            "model_secret_name": "",
            **tables,
        }
        settings = Settings(**fields)
        clients = AwsClients()
        orders = clients.table(settings.orders_table)
        for order in EVAL_ORDERS:
            orders.put({"tenant_id": EVAL_TENANT, **order})
        orders.put({"tenant_id": OTHER_TENANT, **OTHER_TENANT_ORDER})
        runtime = Runtime(settings, clients=clients)
        yield InProcessTarget(runtime, {name: load_agent(name) for name in agents}), offline


@contextlib.contextmanager
def api_target(
    agents: list[str], url: str | None, key: str | None, facts_file: Path | None = None
) -> Iterator[tuple[Any, bool]]:
    """(target, offline): a running API; what is not given comes from ``.stratus/local.json``."""
    from functions.agents import load_agent
    from stratus.evals.api_target import ApiTarget, ApiUnreachable

    facts_file = facts_file or LOCAL_FACTS
    facts: dict[str, Any] = {}
    if not url or not key:
        try:
            facts = json.loads(facts_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise UsageError(
                f"--api: no local cloud is running ({_display(facts_file)} not found or "
                "unreadable); start one with `stratus dev`, or pass --api URL --key KEY"
            ) from None
    url = url or facts.get("api_url")
    key = key or facts.get("demo_tenant_key")
    if not url or not key:
        raise UsageError(f"--api: {_display(facts_file)} names no api_url / demo_tenant_key")
    # The facts say whether that cloud runs the fake model; for another API it is unknown.
    offline = bool(facts.get("fake_model")) and facts.get("api_url") == url
    specs = {name: load_agent(name) for name in agents}
    schemas = {
        name: None if spec.output_schema is None else spec.output_schema.model_json_schema()
        for name, spec in specs.items()
    }
    try:
        target = ApiTarget(
            url,
            key,
            schemas,
            versions={name: spec.version for name, spec in specs.items()},
            fake_model=offline,
        )
        target.check_reachable()
    except ApiUnreachable as error:
        raise UsageError(f"--api: {error}; is the local cloud running (`stratus dev`)?") from None
    print(f"[eval] against the API at {url}", file=sys.stderr)
    yield target, offline


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
    suites = load_suites(args.agents_dir, args.agent)
    planned = plan(
        [s for agent in suites for s in suites[agent]], tag=args.tag, samples=args.samples
    )
    if not planned:
        raise UsageError(f"no case has the tag {args.tag!r}")
    agents = sorted({item.agent for item in planned})
    started = time.perf_counter()
    chosen = (
        in_process_target(agents)
        if args.api is None and args.key is None
        else api_target(agents, args.api, args.key)
    )
    with chosen as (target, offline):
        with _quiet_runtime():
            results = run_cases(planned, target, concurrency=args.concurrency, progress=_Progress())
        verdicts = []
        for agent in agents:
            baseline_path = args.agents_dir / agent / "evals" / BASELINE_FILE
            verdicts.append(
                gate.judge(
                    agent,
                    suites[agent],
                    [r for r in results if r.agent == agent],
                    model=target.model(agent) + (" (offline fake model)" if offline else ""),
                    release=target.release(agent),
                    baseline=gate.load_baseline(baseline_path),
                )
            )
    elapsed = time.perf_counter() - started
    if args.update_baseline:
        for verdict in verdicts:
            path = args.agents_dir / verdict.agent / "evals" / BASELINE_FILE
            gate.write_baseline(path, verdict.as_baseline())
            print(
                f"baseline written: {_display(path)} (score {verdict.score:.2f})", file=sys.stderr
            )
    _write_reports(args, verdicts, elapsed, offline)
    for v in verdicts:
        base = "" if v.baseline_score is None else f" (baseline {v.baseline_score:.2f})"
        status = "pass" if v.passed else "FAIL"
        print(f"{v.agent}: score {v.score:.2f}{base}, {len(v.cases)} cases: {status}")
        for reason in v.reasons:
            print(f"  - {reason}")
    total = sum(len(v.cases) for v in verdicts)
    print(f"{total} cases in {elapsed:.1f} s" + (" (offline fake model)" if offline else ""))
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
        return run(args)
    except UsageError as error:
        print(f"stratus eval: {error}", file=sys.stderr)
        return 2

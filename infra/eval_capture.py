"""``stratus eval capture``: an agent's stored answers as candidate eval cases, for review.

``stratus eval capture --agent A --since 1d --sample N --out FILE`` reads the
agent's succeeded jobs (input -> case input, result -> ``reference``; a job
submitted with ``route`` keeps it and the observed ``routed_to``) and its
session turns (the session's user messages up to the turn -> a list-of-turns
input, the turn's reply -> ``reference``), samples them and writes one suite
file of candidate cases (:mod:`stratus.evals.capture` builds them) that
``stratus eval`` accepts as written. A person reviews, tightens and commits it.

Where it reads: by default the running local cloud (its AWS endpoint and table
names from ``.stratus/local.json``; exit 2 when none is running); with
``--stack NAME`` (and ``--region``) the tables of a deployed stage, found by the
logical ids the CDK app gives them (``Tables<Name><hash>``) among the stack's
resources.

DynamoDB: capture is an offline tool, so it scans. One filtered Scan of the jobs
table (the agent's succeeded jobs updated since the cutoff, ``sk = JOB``), one
filtered Scan of the sessions table for the agent's session heads, per head one
Query page per 500 messages (``DynamoSessionStore.messages``), and for a workflow
agent one Query per sampled job for its steps (``DynamoJobStore.steps``). Nothing
here is on a request path.

Exit codes: 0 the file was written; 1 there was nothing to capture (no file is
written: a suite needs a case); 2 an option or the source cannot be used.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.local.facts import LOCAL_CREDENTIALS
from infra.paths import FUNCTIONS_DIR, REPO_ROOT
from stratus import ddb
from stratus.evals import capture
from stratus.evals.capture import CaptureError, Interaction

AGENTS_DIR = FUNCTIONS_DIR / "agents"
SCHEMA_FILE = REPO_ROOT / "evals" / "schema.json"
LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
#: The construct id of ``StratusTables`` in ``infra/stack.py``: table logical ids are
#: ``Tables`` + the table's PascalCase name + CDK's 8-character hash.
TABLES_CONSTRUCT = "Tables"
CAPTURED_TABLES = ("jobs", "sessions")
MESSAGE_PAGE = 500
DESCRIPTION = (
    "Turn the agent's stored answers (succeeded jobs, session turns) into candidate eval "
    "cases with the observed answer as their reference, for a person to review and commit. "
    "Reads the running local cloud (.stratus/local.json) or, with --stack, a deployed "
    "stage. Exit 0: written; 1: nothing to capture; 2: an unusable option or source."
)


class UsageError(Exception):
    """Exit code 2: an option or the source cannot be used."""


@dataclass
class Source:
    """Where the interactions are read: a label for the file, and the two tables."""

    where: str
    jobs: ddb.Table
    sessions: ddb.Table


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", required=True, help="the agent whose answers become cases")
    p.add_argument(
        "--since",
        default="1d",
        help="answers since: 30m, 12h, 1d, 7d, or an ISO date/time in UTC (default 1d)",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=20,
        help="at most this many cases, a random sample when there are more (default 20)",
    )
    p.add_argument("--seed", type=int, help="the random sample's seed (repeatable samples)")
    p.add_argument("--out", required=True, type=Path, help="the suite file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--tenant", help="only this tenant's answers (its id is never written)")
    p.add_argument(
        "--stack",
        help="read a deployed stage's tables (CloudFormation stack name, e.g. Stratus-dev)",
    )
    p.add_argument("--region", help="the stack's region (default: the AWS environment's)")
    p.add_argument(
        "--facts",
        type=Path,
        default=LOCAL_FACTS,
        help="the running local cloud's facts file (default .stratus/local.json)",
    )


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``capture`` on sub-parsers (``stratus eval capture ...``); it runs :func:`run`."""
    p = commands.add_parser(
        "capture",
        help="turn an agent's stored answers (jobs, session turns) into candidate eval cases",
        description=DESCRIPTION,
    )
    _arguments(p)
    p.set_defaults(func=run)
    return p


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# -- sources ------------------------------------------------------------------------------


def _client_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def local_source(facts_file: Path) -> Source:
    """The running local cloud's tables, from its facts file."""
    import boto3
    from botocore.config import Config

    try:
        facts = json.loads(facts_file.read_text(encoding="utf-8"))
        endpoint, region = str(facts["aws_endpoint_url"]), str(facts["region"])
        names = {name: str(facts["tables"][name]) for name in CAPTURED_TABLES}
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(
            f"no local cloud is running ({_display(facts_file)} not found or unreadable); "
            "start one with `stratus dev`, or read a deployed stage with --stack NAME"
        ) from None
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=region,
    )
    config = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2})
    client = session.client("dynamodb", endpoint_url=endpoint, config=config)
    try:
        client.describe_table(TableName=names["jobs"])
    except _client_errors() as error:
        raise UsageError(
            f"no local cloud answers at {endpoint} ({_display(facts_file)} is stale?): "
            f"{error}; start one with `stratus dev`"
        ) from None
    return Source(
        where="the local cloud",
        jobs=ddb.Table(names["jobs"], client),
        sessions=ddb.Table(names["sessions"], client),
    )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def stack_tables(cloudformation: Any, stack: str) -> dict[str, str]:
    """Table name -> physical name, from the stack's resources (``ListStackResources``, which
    pages; ``DescribeStackResources`` stops at 100 resources and a stage has more)."""
    patterns = {
        name: re.compile(rf"^{TABLES_CONSTRUCT}{_pascal(name)}[0-9A-F]{{8}}$")
        for name in CAPTURED_TABLES
    }
    found: dict[str, str] = {}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
        for resource in page.get("StackResourceSummaries", []):
            if resource.get("ResourceType") != "AWS::DynamoDB::Table":
                continue
            for name, pattern in patterns.items():
                if pattern.match(resource.get("LogicalResourceId", "")):
                    found[name] = str(resource["PhysicalResourceId"])
    return found


def stack_source(stack: str, region: str | None) -> Source:
    """A deployed stage's tables (credentials and endpoint from the AWS environment)."""
    import boto3

    try:
        session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
        found = stack_tables(session.client("cloudformation"), stack)
    except _client_errors() as error:
        raise UsageError(f"--stack {stack}: {error}") from None
    missing = [name for name in CAPTURED_TABLES if name not in found]
    if missing:
        raise UsageError(
            f"--stack {stack}: no {' or '.join(missing)} table among its resources "
            f"(logical id {TABLES_CONSTRUCT}<Name><hash>); is it a Stratus stack?"
        )
    client = session.client("dynamodb")
    where = f"stack {stack} ({session.region_name or 'default region'})"
    return Source(where, ddb.Table(found["jobs"], client), ddb.Table(found["sessions"], client))


# -- reading ------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    """As the jobs table stores times (``stratus.jobs.contracts.now_iso``), so they compare."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def read_jobs(table: ddb.Table, agent: str, since: datetime, tenant: str | None) -> list[Any]:
    """The agent's succeeded jobs whose last update is at or after ``since`` (one Scan)."""
    condition = "#sk = :job AND #agent = :agent AND #status = :ok AND #updated >= :since"
    names = {"#sk": "sk", "#agent": "agent", "#status": "status", "#updated": "updated_at"}
    values: dict[str, Any] = {
        ":job": "JOB",
        ":agent": agent,
        ":ok": "succeeded",
        ":since": _stamp(since),
    }
    if tenant:
        condition += " AND #tenant = :tenant"
        names["#tenant"] = "tenant_id"
        values[":tenant"] = tenant
    return list(table.scan_all(filter=condition, names=names, values=values))


def read_sessions(
    table: ddb.Table, agent: str, since: datetime, tenant: str | None
) -> list[Interaction]:
    """The agent's session turns answered at or after ``since``: one Scan for the heads,
    then each session's messages (the store's own paged read)."""
    from stratus.sessions import DynamoSessionStore
    from stratus.sessions.model import HEAD_SK, SessionKey

    condition = "#sk = :head AND #agent = :agent"
    names = {"#sk": "sk", "#agent": "agent"}
    values: dict[str, Any] = {":head": HEAD_SK, ":agent": agent}
    if tenant:
        condition += " AND #tenant = :tenant"
        names["#tenant"] = "tenant_id"
        values[":tenant"] = tenant
    store = DynamoSessionStore(table)
    out: list[Interaction] = []
    for head in table.scan_all(filter=condition, names=names, values=values):
        key = SessionKey.from_pk(str(head["sid"]))
        messages = []
        after = 0
        while True:
            page = store.messages(key, after=after, limit=MESSAGE_PAGE, newest_first=False)
            messages += page
            if len(page) < MESSAGE_PAGE:
                break
            after = page[-1].index
        out += capture.session_interactions(head, messages, since=since)
    return out


def read_interactions(
    source: Source, agent: str, since: datetime, tenant: str | None
) -> list[Interaction]:
    found = [
        item
        for item in map(capture.job_interaction, read_jobs(source.jobs, agent, since, tenant))
        if item is not None
    ]
    return found + read_sessions(source.sessions, agent, since, tenant)


def with_steps(table: ddb.Table, items: Sequence[Interaction]) -> list[Interaction]:
    """The jobs among ``items`` with the names of their recorded steps (the job store's own
    read: one Query per job, for the sampled ones only)."""
    from dataclasses import replace

    from stratus.jobs.contracts import STEP_PREFIX
    from stratus.jobs.dynamo import DynamoJobStore

    store = DynamoJobStore(table)
    out = []
    for item in items:
        if item.source == "job":
            names = tuple(
                str(s["sk"]).removeprefix(STEP_PREFIX) for s in store.steps(item.source_id)
            )
            item = replace(item, steps=names)
        out.append(item)
    return out


# -- writing ------------------------------------------------------------------------------


def answer_schema(agent: str) -> tuple[dict[str, Any] | None, bool]:
    """(schema, explicit): the JSON schema the agent's answers follow, and whether a case
    must name it (a workflow agent's job answers are its reviewer's, not its own schema)."""
    from functions.agents import load_agent

    spec = load_agent(agent)
    if spec.workflow:
        workflow = getattr(importlib.import_module(f"functions.agents.{agent}"), "WORKFLOW", None)
        final = getattr(getattr(workflow, "reviewer", None), "output_schema", None)
        return (None, False) if final is None else (final.model_json_schema(), True)
    if spec.output_schema is None:
        return None, False
    return spec.output_schema.model_json_schema(), False


def _agent_evals_dir(out: Path) -> Path | None:
    """The ``functions/agents/<agent>/evals`` directory ``out`` is written under, if any."""
    resolved = out.resolve()
    agents = AGENTS_DIR.resolve()
    parts = resolved.relative_to(agents).parts if resolved.is_relative_to(agents) else ()
    if len(parts) >= 3 and parts[1] == "evals":
        return agents / parts[0] / "evals"
    return None


def _taken_ids(evals_dir: Path, out: Path) -> set[str]:
    """Case ids of the agent's other suite files (ids are unique per agent)."""
    from stratus.evals.models import SuiteError, load_suite, suite_files

    taken: set[str] = set()
    for path in suite_files(evals_dir):
        if path.resolve() == out.resolve():
            continue
        try:
            taken |= {case.id for case in load_suite(path).cases}
        except SuiteError:
            continue
    return taken


def run(args: argparse.Namespace) -> int:
    """``stratus eval capture``; its exit code (errors are printed, never raised)."""
    try:
        return _capture(args)
    except (UsageError, CaptureError) as error:
        print(f"stratus eval capture: {error}", file=sys.stderr)
        return 2


def _capture(args: argparse.Namespace) -> int:
    from functions.agents import agent_names, load_agent

    if args.agent not in agent_names():
        raise UsageError(
            f"--agent {args.agent}: no such agent (agents: {', '.join(agent_names())})"
        )
    if args.sample < 1:
        raise UsageError("--sample must be at least 1")
    now = datetime.now(UTC)
    since = capture.parse_since(args.since, now)
    out: Path = args.out
    if out.is_dir():
        raise UsageError(f"--out {_display(out)} is a directory")
    if out.exists() and not args.force:
        raise UsageError(f"{_display(out)} exists; pass --force to overwrite it")
    source = stack_source(args.stack, args.region) if args.stack else local_source(args.facts)
    try:
        found = read_interactions(source, args.agent, since, args.tenant)
    except _client_errors() as error:
        raise UsageError(f"reading {source.where}: {error}") from None
    evals_dir = _agent_evals_dir(out)
    if evals_dir is not None:
        taken = _taken_ids(evals_dir, out)
        found = [item for item in found if capture.case_id(item) not in taken]
    who = f" of tenant {args.tenant}" if args.tenant else ""
    if not found:
        print(
            f"stratus eval capture: no answers of {args.agent}{who} on {source.where} since "
            f"{since.isoformat(timespec='seconds')}; nothing written",
            file=sys.stderr,
        )
        return 1
    chosen = capture.choose(found, args.sample, args.seed)
    schema, explicit = answer_schema(args.agent)
    if load_agent(args.agent).workflow:  # its cases name the steps each job recorded
        chosen = with_steps(source.jobs, chosen)
    cases = [
        capture.build_case(item, where=source.where, schema=schema, explicit_schema=explicit)
        for item in chosen
    ]
    schema_ref = None
    if evals_dir is not None:
        schema_ref = Path(os.path.relpath(SCHEMA_FILE, out.resolve().parent)).as_posix()
    document = capture.build_suite(
        args.agent,
        cases,
        where=source.where,
        since=since,
        total=len(found),
        now=now,
        schema_ref=schema_ref,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    jobs = sum(1 for item in chosen if item.source == "job")
    print(
        f"wrote {_display(out)}: {len(cases)} candidate cases of {args.agent} "
        f"({jobs} jobs, {len(cases) - jobs} session turns; {len(found)} answers since "
        f"{since.isoformat(timespec='seconds')} on {source.where}). "
        "Review them before committing."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus eval capture", description=DESCRIPTION)
    _arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``stratus eval capture`` on its own (``python -m infra.eval_capture ...``)."""
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())

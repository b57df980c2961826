"""``stratus canary``: a candidate version of an agent on the running local cloud, judged.

``stratus canary --agent A --candidate C --weight 10 --for 60s`` against ``stratus dev``
(its facts in ``.stratus/local.json``):

1. the candidate (``infra.canary_candidates``) is checked; a bad one exits 2 before
   anything changes;
2. the cloud publishes it as a second version of the agent's API function and job
   worker (``POST /_stratus/canary/A`` on its AWS front);
3. **pre-traffic**: the agent's ``critical`` eval cases (those a single function version
   can answer: not job cases) run against the candidate and the stable version through
   Lambda ``Invoke`` with a ``Qualifier`` (``LambdaVersionTarget``); if
   ``stratus.release_gate.decide(..., traffic=False)`` says no, the candidate is dropped
   before it serves anyone;
4. ``--weight`` percent of the alias (the gateway, the pollers and the workflow front all
   route through it) goes to the candidate for ``--for`` (and until ``--drive N`` requests
   are answered); a table shows both versions' requests, errors, p90 latency, cost per
   task and eval score, refreshed on a terminal, one line per interval otherwise;
5. ``decide(candidate, stable, policy)`` (the policy: the stage's ``release_gate`` in
   ``cdk.json``, with ``--min-requests`` etc. on top) promotes (the candidate becomes the
   stable version with all traffic; exit 0) or rolls back (dropped; exit 1), and says why.

``--shadow``: the candidate gets a copy of the API traffic and its answers are dropped;
the report compares cost and eval; nothing is promoted (exit 0 if it would have been).
Offline, scores come from the fake model: they prove the harness, not quality.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from infra.canary_candidates import Candidate, parse_candidate
from infra.eval_targets import UsageError
from infra.paths import REPO_ROOT

LOCAL_FACTS = REPO_ROOT / ".stratus" / "local.json"
DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
DEFAULT_INPUT = "Where is my order A-1001?"


def duration(text: str) -> float:
    """``60s``, ``2m``, ``500ms`` or plain seconds -> seconds."""
    match = DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 2m, 500ms)")
    return float(match["n"]) * _UNITS[match["unit"]]


def add_parser(commands: Any) -> None:
    """Register ``canary`` on the ``stratus`` command's sub-parsers."""
    p = commands.add_parser(
        "canary", help="run a candidate version of an agent beside the stable one and judge it"
    )
    p.add_argument("--agent", required=True, help="the agent, e.g. triage")
    p.add_argument(
        "--candidate",
        required=True,
        help="prompt_version=v2 | tier=smart | a path to an agent package | a git ref",
    )
    p.add_argument("--weight", type=float, default=10.0, help="percent of traffic (default 10)")
    p.add_argument(
        "--for", dest="window", type=duration, default=60.0, help="how long (default 60s)"
    )
    p.add_argument("--interval", type=duration, default=5.0, help="table refresh (default 5s)")
    p.add_argument("--shadow", action="store_true", help="copy traffic; never serve its answers")
    p.add_argument("--drive", type=int, default=0, metavar="N", help="send N invokes yourself")
    p.add_argument("--stage", default="dev", help="whose release_gate policy (default dev)")
    p.add_argument("--state-file", type=Path, default=LOCAL_FACTS, help="the cloud's facts")
    p.add_argument("--skip-evals", action="store_true", help="no pre-traffic eval gate")
    gate = p.add_argument_group("gate overrides (default: the stage's release_gate)")
    gate.add_argument("--min-requests", type=int)
    gate.add_argument("--max-error-rate", type=float)
    gate.add_argument("--max-p90-latency-ratio", type=float)
    gate.add_argument("--max-cost-per-task-ratio", type=float)
    gate.add_argument("--max-cost-per-task-usd", type=float)
    gate.add_argument("--min-eval-score", type=float)
    p.set_defaults(func=main)


# -- the running cloud -------------------------------------------------------------------


class Cloud:
    """The control API of a running local cloud, from its facts file."""

    def __init__(self, state_file: Path, facts: Mapping[str, Any] | None = None) -> None:
        """``facts``: a cloud's facts given directly (the demo's own cloud has no file)."""
        if facts is not None:
            self.facts: dict[str, Any] = dict(facts)
        else:
            try:
                self.facts = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise UsageError(
                    f"no running local cloud ({state_file} is missing): start `stratus dev` first"
                ) from None
        self.aws_url = str(self.facts["aws_endpoint_url"])

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the loopback front
            self.aws_url + path, data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError as error:
            raise UsageError(f"the local cloud at {self.aws_url} did not answer: {error}") from None

    def canary(self, agent: str, action: str = "", body: Any = None) -> dict[str, Any]:
        path = f"/_stratus/canary/{agent}" + (f"/{action}" if action else "")
        status, payload = self.call("GET" if body is None and not action else "POST", path, body)
        if status >= 400:
            error = payload.get("error") or {}
            raise UsageError(f"{error.get('code', status)}: {error.get('message', payload)}")
        return payload


def policy_for(args: argparse.Namespace) -> Any:
    from infra.config import load_stage
    from stratus.release_gate import GatePolicy

    try:
        base = getattr(load_stage(args.stage), "release_gate", None) or GatePolicy()
    except Exception as error:  # an unknown stage or a bad cdk.json
        raise UsageError(f"--stage {args.stage}: {error}") from None
    changes = {
        name: getattr(args, name)
        for name in (
            "min_requests",
            "max_error_rate",
            "max_p90_latency_ratio",
            "max_cost_per_task_ratio",
            "max_cost_per_task_usd",
            "min_eval_score",
        )
        if getattr(args, name) is not None
    }
    try:
        return GatePolicy.model_validate({**base.model_dump(), **changes})
    except ValueError as error:
        raise UsageError(f"gate overrides: {error}") from None


# -- evals before traffic --------------------------------------------------------------


def eval_score(cloud: Cloud, agent: str, qualifier: str) -> float | None:
    """The agent's critical cases (not job cases) on one version; None if it has none."""
    import boto3

    from functions.agents import load_agent
    from infra.eval_cli import AGENTS_DIR, load_suites
    from stratus.evals import gate
    from stratus.evals.lambda_target import LambdaVersionTarget
    from stratus.evals.runner import plan, run_cases

    suites = load_suites(AGENTS_DIR, [agent])[agent]
    planned = [p for p in plan(suites, tag="critical") if p.case.mode != "job"]
    if not planned:
        return None
    facts = cloud.facts
    client = boto3.session.Session(
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the local endpoint takes any key
        region_name=str(facts.get("region") or "us-east-1"),
    ).client("lambda", endpoint_url=cloud.aws_url)
    schema = load_agent(agent).output_schema
    target = LambdaVersionTarget(
        client,
        {agent: facts["functions"][f"agent:{agent}"]},
        qualifier,
        {agent: None if schema is None else schema.model_json_schema()},
        tenant_id=str(facts["demo_tenant_id"]),
        fake_model=bool(facts.get("fake_model")),
    )
    results = run_cases(planned, target, concurrency=4)
    verdict = gate.judge(
        agent, suites, results, model=target.model(agent), release=qualifier, baseline=None
    )
    return float(verdict.score)


# -- the table ---------------------------------------------------------------------------


def combined(status: Mapping[str, Any], which: str) -> Any:
    """``VersionStats`` of the candidate (``which="candidate"``) or the stable version,
    over the agent's functions (API and worker)."""
    from stratus.release_gate import VersionStats, p90

    candidate = (status.get("candidate") or {}).get("versions") or {}
    requests = errors = tasks = 0
    cost = 0.0
    durations: list[float] = []
    for name, function in (status.get("functions") or {}).items():
        label = candidate.get(name) if which == "candidate" else function["primary"]
        stats = (function.get("stats") or {}).get(label)
        if label is None or stats is None:
            continue
        requests += int(stats["requests"])
        errors += int(stats["errors"])
        durations += [float(d) for d in stats["durations_ms"]]
        cost += float(stats["cost_usd"])
        tasks += int(stats["tasks"])
    return VersionStats(requests, errors, p90(durations), cost, tasks)


def row(label: str, stats: Any, score: float | None) -> str:
    rate = stats.error_rate
    p90_ms = "-" if stats.p90_latency_ms is None else f"{stats.p90_latency_ms:.0f}"
    cost = "-" if stats.cost_per_task is None else f"${stats.cost_per_task:.6f}"
    shown = "-" if score is None else f"{score:.1f}"
    errors = f"{stats.errors}" + ("" if rate is None else f" ({rate * 100:.1f}%)")
    return f"{label:<10} {stats.requests:>8} {errors:>14} {p90_ms:>8} {cost:>13} {shown:>6}"


HEADER = (
    f"{'version':<10} {'requests':>8} {'errors':>14} {'p90 ms':>8} {'cost/task':>13} {'eval':>6}"
)


def _driver(cloud: Cloud, agent: str, count: int) -> threading.Thread:
    """``--drive N``: N invokes over HTTP, one after the other, in the background."""
    facts = cloud.facts
    url = f"{facts['api_url']}/v1/agents/{agent}/invoke"
    headers = {
        "Authorization": f"Bearer {facts['demo_tenant_key']}",
        "Content-Type": "application/json",
    }

    def drive() -> None:
        for _ in range(count):
            body = json.dumps({"input": DEFAULT_INPUT}).encode()
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=60):  # noqa: S310
                pass

    thread = threading.Thread(target=drive, name="canary-drive", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _cleanup_on_error(cloud: Cloud, agent: str, candidate: Candidate) -> Iterator[None]:
    """Any failure mid-canary drops the candidate: never leave it serving."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            cloud.canary(agent, "rollback", {})
        candidate.cleanup()
        raise


def _finish(
    cloud: Cloud, args: argparse.Namespace, candidate: Candidate, decision: Any, out: Any
) -> int:
    if args.shadow:
        cloud.canary(args.agent, "rollback", {})
        candidate.cleanup()
        verdict = "would be promoted" if decision.promote else "would be rolled back"
        print(f"shadow: {verdict}; the candidate is dropped. {decision.summary()}", file=out)
        return 0 if decision.promote else 1
    if decision.promote:
        cloud.canary(args.agent, "promote", {})
        print(f"promoted {candidate.description}: {decision.summary()}", file=out)
        return 0
    cloud.canary(args.agent, "rollback", {})
    candidate.cleanup()
    print(f"rolled back {candidate.description}: {decision.summary()}", file=out)
    return 1


def run(
    args: argparse.Namespace, out: Any = sys.stdout, facts: Mapping[str, Any] | None = None
) -> int:
    from stratus.release_gate import VersionStats, decide

    if not 0 <= args.weight <= 100:
        raise UsageError("--weight must be between 0 and 100")
    if args.drive < 0:
        raise UsageError("--drive must not be negative")
    policy = policy_for(args)
    cloud = Cloud(args.state_file, facts)
    candidate = parse_candidate(args.agent, args.candidate)
    body = {"candidate": candidate.payload, "label": candidate.description}
    cloud.canary(args.agent, "", body)  # published, no traffic yet
    with _cleanup_on_error(cloud, args.agent, candidate):
        status = cloud.canary(args.agent)
        version = status["candidate"]["versions"][cloud.facts["functions"][f"agent:{args.agent}"]]
        print(f"candidate {candidate.description}: version {version} of {args.agent}", file=out)
        scores: dict[str, float | None] = {"stable": None, "candidate": None}
        if not args.skip_evals:
            scores["candidate"] = eval_score(cloud, args.agent, version)
            scores["stable"] = eval_score(cloud, args.agent, "$LATEST")
            pre = decide(
                VersionStats(eval_score=scores["candidate"]),
                VersionStats(eval_score=scores["stable"]),
                policy,
                traffic=False,
            )
            print(f"pre-traffic evals: {pre.summary()}", file=out)
            if not pre.promote:
                cloud.canary(args.agent, "rollback", {})
                candidate.cleanup()
                print(f"rolled back before traffic: {pre.summary()}", file=out)
                return 1
        cloud.canary(args.agent, "weights", {"weight": args.weight, "shadow": args.shadow})
        share = "a copy of the traffic" if args.shadow else f"{args.weight:g}% of the traffic"
        print(f"{candidate.description} gets {share} for {args.window:g} s", file=out)
        driver = _driver(cloud, args.agent, args.drive) if args.drive else None
        status = _watch(cloud, args, scores, driver, out)
        cand = combined(status, "candidate")
        stable = combined(status, "stable")
        decision = decide(
            VersionStats(**{**cand.__dict__, "eval_score": scores["candidate"]}),
            VersionStats(**{**stable.__dict__, "eval_score": scores["stable"]}),
            policy,
        )
        return _finish(cloud, args, candidate, decision, out)


def _watch(
    cloud: Cloud,
    args: argparse.Namespace,
    scores: Mapping[str, float | None],
    driver: threading.Thread | None,
    out: Any,
) -> dict[str, Any]:
    """The window: the table every ``--interval`` until ``--for`` ends and the driver is done."""
    tty = bool(getattr(out, "isatty", lambda: False)())
    ends = time.monotonic() + args.window
    drawn = False
    if not tty:
        print(f"{'':8} {HEADER}", file=out, flush=True)
    while True:
        now = time.monotonic()
        done = now >= ends and (driver is None or not driver.is_alive())
        status = cloud.canary(args.agent)
        lines = [
            row("stable", combined(status, "stable"), scores["stable"]),
            row("candidate", combined(status, "candidate"), scores["candidate"]),
        ]
        if tty:
            if drawn:
                out.write("\x1b[3F\x1b[J")
            out.write("\n".join([HEADER, *lines]) + "\n")
            out.flush()
            drawn = True
        else:
            stamp = f"[{args.window - max(0.0, ends - now):5.1f}s]"
            print("\n".join(f"{stamp} {line}" for line in lines), file=out, flush=True)
        if done:
            return status
        wait = min(args.interval, max(0.05, ends - now)) if now < ends else 0.2
        if driver is not None and now >= ends:
            driver.join(args.interval)
        else:
            time.sleep(wait)


def main(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except UsageError as error:
        print(f"stratus canary: {error}", file=sys.stderr)
        return 2

"""Cold start of handler modules, each sample in a fresh interpreter.

Every sample is a new ``python -c`` process (the same interpreter as the
benchmark) that times ``__import__(module)`` with ``time.perf_counter`` and
then reports, as JSON on stdout, the import time, which heavy packages ended up
in ``sys.modules`` and the process's peak RSS. The environment looks like a
Lambda function's (``LAMBDA_TASK_ROOT`` set, so Powertools Tracer is *enabled*
and patches libraries as it does in Lambda) except that the X-Ray SDK is
switched off so nothing tries to reach a daemon.

Init is the import plus the hooks the module registered with
``snapshot_restore_py.register_before_snapshot`` (``prime_ms``), run after the
import as Lambda's init phase and the local worker run them; the processes get
``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`` so the import itself stays a plain
import (an on-demand init does the same work inside the import). ``init_ms`` is
the sum.

A second kind of sample (for the handlers that can answer without AWS) also
calls ``lambda_handler`` twice after init with the triage invoke event, against
the offline fake model server: the first call is what a cold start adds after
init, the second is a warm call. Those runs are separate so the import-only
numbers stay clean. A third kind (the agent function) stands in for a SnapStart
restore: after init it runs the after-restore hooks (``restore_ms``), then the
two calls. :func:`ratios` gives issue 11's ratios from one run.

Samples are taken round-robin over the modules, so a slow spell of the machine
hits every module alike. One extra untimed run per module comes first, so the
bytecode caches exist (Lambda layers ship compiled ``.pyc`` files too), and one
``-X importtime`` run per module attributes the time to packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO, base_event, make_event
from bench.stats import summarize
from infra.local.fake_model import FakeModelServer

#: Packages whose presence after import is worth reporting.
WATCHED = (
    "openai",
    "httpx2",
    "boto3",
    "botocore",
    "pydantic",
    "pydantic_settings",
    "aws_xray_sdk",
)

MARK_START = "@@bench-import-start"
MARK_END = "@@bench-import-end"
MARK_INVOKE_START = "@@bench-invoke-start"
MARK_INVOKE_END = "@@bench-invoke-end"
MARK_PRIME_START = "@@bench-prime-start"
MARK_PRIME_END = "@@bench-prime-end"
RESULT = "@@bench-result "

# Only builtin modules (sys, time) are loaded before the clock starts, so the
# import being timed pays for everything it needs (json included).
PROBE = f"""
import sys, time
name = sys.argv[1]
sys.stderr.write("{MARK_START}\\n"); sys.stderr.flush()
started = time.perf_counter()
if name:
    __import__(name)
elapsed = time.perf_counter() - started
sys.stderr.write("{MARK_END}\\n"); sys.stderr.flush()
import json, os, resource
result = {{"import_ms": elapsed * 1000.0}}
result["modules"] = {{m: m in sys.modules for m in {WATCHED!r}}}
result["module_count"] = len(sys.modules)

def run_hooks(kind):
    # What Lambda's init phase (before_snapshot) and a SnapStart restore (after_restore)
    # run, and what infra.local.lambda_worker runs after the import.
    hooks = sys.modules.get("snapshot_restore_py")
    entries = getattr(hooks, "get_" + kind)() if hooks is not None else []
    started = time.perf_counter()
    for func, args, kwargs in list(entries):
        func(*args, **kwargs)
    return (time.perf_counter() - started) * 1000.0, len(entries)

if name and os.environ.get("BENCH_PRIME"):
    sys.stderr.write("{MARK_PRIME_START}\\n"); sys.stderr.flush()
    result["prime_ms"], result["prime_hooks"] = run_hooks("before_snapshot")
    sys.stderr.write("{MARK_PRIME_END}\\n"); sys.stderr.flush()
    result["modules_after_prime"] = {{m: m in sys.modules for m in {WATCHED!r}}}
if name and os.environ.get("BENCH_RESTORE"):
    result["restore_ms"], result["restore_hooks"] = run_hooks("after_restore")
event_path = os.environ.get("BENCH_EVENT")
if name and event_path:
    class Context:
        function_name = "stratus-bench"
        function_version = "$LATEST"
        memory_limit_in_mb = 512
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-bench"
        aws_request_id = "bench-request"
        log_group_name = "/aws/lambda/stratus-bench"
        log_stream_name = "bench"
        def get_remaining_time_in_millis(self):
            return 20000
    with open(event_path) as source:
        event = json.load(source)
    handler = sys.modules[name].lambda_handler
    result["invokes"] = []
    for call in range(2):
        if call == 0:
            sys.stderr.write("{MARK_INVOKE_START}\\n"); sys.stderr.flush()
        started = time.perf_counter()
        reply = handler(event, Context())
        if call == 0:
            sys.stderr.write("{MARK_INVOKE_END}\\n"); sys.stderr.flush()
        result["invokes"].append(
            {{"ms": (time.perf_counter() - started) * 1000.0, "status": reply.get("statusCode")}}
        )
    result["modules_after_invoke"] = {{m: m in sys.modules for m in {WATCHED!r}}}
# ru_maxrss can carry the parent's peak over fork/exec; VmHWM starts afresh at exec.
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak_kb = int(line.split()[1])
except OSError:
    pass
result["peak_rss_kb"] = peak_kb
sys.stdout.flush()
print("{RESULT}" + json.dumps(result), flush=True)
"""


@dataclass(frozen=True)
class Target:
    label: str
    module: str  # empty: the bare interpreter, for reference
    description: str
    #: Whether its lambda_handler can answer the triage event without AWS.
    invokable: bool = False
    #: Variables set on top of :func:`lambda_like_env` (e.g. which agent it serves).
    env: tuple[tuple[str, str], ...] = ()
    #: Whether it registers init hooks (``snapshot_restore_py``): its samples run them
    #: after the import (``prime_ms``), as Lambda's init phase does.
    primes: bool = False
    #: Whether to sample a SnapStart restore too (after-restore hooks, then two invokes).
    snapstart: bool = False


AGENT = (("STRATUS_AGENT", "triage"),)
TARGETS: tuple[Target, ...] = (
    Target("interpreter", "", "`python -c` importing nothing (startup floor, reference)"),
    Target(
        "bare_powertools",
        "bench.baselines.bare_powertools",
        "Logger + Tracer + Metrics only",
        invokable=True,
    ),
    Target(
        "naive",
        "bench.baselines.naive",
        "tutorial-style eager imports and clients",
        invokable=True,
    ),
    Target(
        "api",
        "functions.handlers.api",
        "Stratus agent function (REST API handler, `STRATUS_AGENT=triage`)",
        invokable=True,
        env=AGENT,
        primes=True,
        snapstart=True,
    ),
    Target(
        "platform",
        "functions.handlers.api",
        "Stratus platform function (same handler, no agent): stays lean",
        env=(("STRATUS_AGENT", ""),),
        primes=True,
    ),
    # Its first call needs the tenants table (DynamoDB): import only.
    Target("authorizer", "functions.handlers.authorizer", "Stratus REQUEST authorizer"),
)
#: Targets of issue 11 (ratios of medians measured in one run).
TARGET_COLD_OVER_NAIVE = 0.6
TARGET_FIRST_OVER_WARM = 1.5


def lambda_like_env() -> dict[str, str]:
    """The parent's environment minus anything that would change the result."""
    dropped = ("POWERTOOLS_", "STRATUS_", "OPENAI_", "AWS_", "LAMBDA_", "_HANDLER", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.pop("BENCH_EVENT", None)
    env.update(
        {
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_REGION": "eu-west-1",
            "AWS_XRAY_SDK_ENABLED": "false",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_LAMBDA_FUNCTION_NAME": "stratus-bench",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "LAMBDA_TASK_ROOT": str(REPO),
            "POWERTOOLS_SERVICE_NAME": "stratus",
            "POWERTOOLS_METRICS_NAMESPACE": "StratusBench",
            "STRATUS_AGENT": "triage",
            # As in a SnapStart init: the import does not prime, the probe runs the
            # hooks (the same work an on-demand init does inside the import).
            "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
            "OPENAI_API_KEY": "sk-bench",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def _run_probe(
    module: str, env: dict[str, str], *, importtime: bool = False
) -> tuple[dict[str, Any], float, str]:
    argv = [sys.executable]
    if importtime:
        argv += ["-X", "importtime"]
    argv += ["-c", PROBE, module]
    started = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall_ms = (time.perf_counter() - started) * 1000.0
    if proc.returncode != 0:
        raise RuntimeError(
            f"importing {module or '(nothing)'} failed (exit {proc.returncode}):\n"
            + proc.stderr[-4000:]
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        raise RuntimeError(f"the probe for {module} printed no result:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1][len(RESULT) :]), wall_ms, proc.stderr


def parse_importtime(
    stderr: str,
    top: int = 6,
    *,
    start: str = MARK_START,
    end: str = MARK_END,
    direct_depth: int = 1,
) -> dict[str, Any]:
    """Attribute imports to packages, from ``-X importtime`` lines between two markers.

    Returns the self time summed by top-level package (which adds up to the whole
    import) and the heaviest imports at ``direct_depth`` (cumulative): depth 1 are
    the direct imports of the measured module (depth 0 being the module and its
    parent packages); for imports done lazily by a handler call, depth 0.
    """
    inside = False
    by_package: dict[str, float] = defaultdict(float)
    direct: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        if line.startswith(start):
            inside = True
            continue
        if line.startswith(end):
            break
        if not inside or not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3:
            continue
        self_us, cumulative_us, name = fields[0].strip(), fields[1].strip(), fields[2]
        if not (self_us.isdigit() and cumulative_us.isdigit()):
            continue  # the header line
        depth = (len(name) - len(name.lstrip(" "))) // 2
        module = name.strip()
        by_package[module.split(".")[0]] += int(self_us) / 1000.0
        if depth == direct_depth:
            direct.append((module, int(cumulative_us) / 1000.0))
    packages = sorted(by_package.items(), key=lambda item: item[1], reverse=True)[:top]
    direct.sort(key=lambda item: item[1], reverse=True)
    return {
        "total_ms": round(sum(by_package.values()), 1),
        "self_ms_by_package": [{"package": p, "ms": round(ms, 1)} for p, ms in packages],
        "heaviest_direct_imports": [{"module": m, "ms": round(ms, 1)} for m, ms in direct[:top]],
    }


def _rotated(items: tuple[Target, ...], index: int) -> tuple[Target, ...]:
    shift = index % len(items)
    return items[shift:] + items[:shift]


def _env_for(target: Target, base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**base, **dict(target.env), **extra}
    if target.primes:
        env["BENCH_PRIME"] = "1"
    return env


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def measure(runs: int, *, log: Callable[[str], None]) -> dict[str, Any]:
    """Sample every target ``runs`` times in fresh interpreters; see the module docstring."""
    env = lambda_like_env()
    slots: dict[str, dict[str, Any]] = {
        t.label: {
            "import_ms": [],
            "prime_ms": [],
            "process_ms": [],
            "probe": None,
            "cold_total_ms": [],
            "first_ms": [],
            "second_ms": [],
            "invoke_prime_ms": [],
            "invoke_probe": None,
            "restore_ms": [],
            "restored_first_ms": [],
            "restored_second_ms": [],
            "restored_total_ms": [],
        }
        for t in TARGETS
    }

    for target in TARGETS:  # untimed: writes the bytecode caches
        _run_probe(target.module, _env_for(target, env))
    for index in range(runs):
        for target in _rotated(TARGETS, index):
            probe, wall_ms, _ = _run_probe(target.module, _env_for(target, env))
            slot = slots[target.label]
            slot["import_ms"].append(probe["import_ms"])
            if "prime_ms" in probe:
                slot["prime_ms"].append(probe["prime_ms"])
            slot["process_ms"].append(wall_ms)
            slot["probe"] = probe
        log(f"  cold start (import): run {index + 1}/{runs}")

    invokable = tuple(t for t in TARGETS if t.invokable)
    restorable = tuple(t for t in TARGETS if t.snapstart)
    with (
        tempfile.TemporaryDirectory(prefix="stratus-bench-") as tmp,
        FakeModelServer(quiet=True) as server,
    ):
        event_path = Path(tmp) / "event.json"
        event_path.write_text(json.dumps(make_event(base_event())), encoding="utf-8")
        invoke_env = {**env, "BENCH_EVENT": str(event_path), "OPENAI_BASE_URL": server.url}
        for target in invokable:  # untimed, and a check that the handler answers
            _check_invokes(target, _run_probe(target.module, _env_for(target, invoke_env))[0])
        for index in range(runs):
            for target in _rotated(invokable, index):
                probe, _, _ = _run_probe(target.module, _env_for(target, invoke_env))
                _check_invokes(target, probe)
                first, second = (call["ms"] for call in probe["invokes"])
                prime = probe.get("prime_ms", 0.0)
                slot = slots[target.label]
                slot["first_ms"].append(first)
                slot["second_ms"].append(second)
                slot["invoke_prime_ms"].append(prime)
                slot["cold_total_ms"].append(probe["import_ms"] + prime + first)
                slot["invoke_probe"] = probe
            for target in restorable:
                probe, _, _ = _run_probe(
                    target.module, _env_for(target, invoke_env, BENCH_RESTORE="1")
                )
                _check_invokes(target, probe)
                first, second = (call["ms"] for call in probe["invokes"])
                slot = slots[target.label]
                slot["restore_ms"].append(probe["restore_ms"])
                slot["restored_first_ms"].append(first)
                slot["restored_second_ms"].append(second)
                slot["restored_total_ms"].append(probe["restore_ms"] + first)
            log(f"  cold start (import + first invoke): run {index + 1}/{runs}")

        attribution: dict[str, dict[str, Any]] = {}
        prime_attribution: dict[str, dict[str, Any]] = {}
        first_attribution: dict[str, dict[str, Any]] = {}
        for target in TARGETS:
            if not target.module:
                continue
            _, _, stderr = _run_probe(target.module, _env_for(target, env), importtime=True)
            attribution[target.label] = parse_importtime(stderr)
            if target.primes:
                prime_attribution[target.label] = parse_importtime(
                    stderr, start=MARK_PRIME_START, end=MARK_PRIME_END, direct_depth=0
                )
            if target.invokable:
                _, _, stderr = _run_probe(
                    target.module, _env_for(target, invoke_env), importtime=True
                )
                first_attribution[target.label] = parse_importtime(
                    stderr, start=MARK_INVOKE_START, end=MARK_INVOKE_END, direct_depth=0
                )
        log("  cold start: -X importtime attribution done")

    modules: list[dict[str, Any]] = []
    for target in TARGETS:
        modules.append(
            _module_entry(
                target,
                slots[target.label],
                attribution.get(target.label, {}),
                prime_attribution.get(target.label),
                first_attribution.get(target.label),
            )
        )
    return {
        "runs": runs,
        "env": {
            k: v
            for k, v in sorted(env.items())
            if k.startswith(("AWS_", "POWERTOOLS_", "LAMBDA_"))
            and not any(secret in k for secret in ("KEY", "TOKEN"))
        },
        "modules": modules,
        "ratios": ratios(modules),
    }


def _module_entry(
    target: Target,
    slot: dict[str, Any],
    attribution: dict[str, Any],
    prime_attribution: dict[str, Any] | None,
    first_attribution: dict[str, Any] | None,
) -> dict[str, Any]:
    probe = slot["probe"]
    primes = slot["prime_ms"] or [0.0] * len(slot["import_ms"])
    init = [i + p for i, p in zip(slot["import_ms"], primes, strict=True)]
    entry: dict[str, Any] = {
        "label": target.label,
        "module": target.module,
        "description": target.description,
        "import_ms": summarize(slot["import_ms"]),
        "process_ms": summarize(slot["process_ms"]),
        # Init = the import + the before-snapshot hooks (None: it registers none).
        "prime_ms": summarize(slot["prime_ms"]) if slot["prime_ms"] else None,
        "init_ms": summarize(init),
        "openai_imported": probe["modules"]["openai"],
        "openai_after_init": probe.get("modules_after_prime", probe["modules"])["openai"],
        "loaded": probe["modules"],
        "module_count": probe["module_count"],
        "peak_rss_mb": round(probe["peak_rss_kb"] / 1024.0, 1),
        "first_invoke": None,
        "restore": None,
        **attribution,
    }
    if prime_attribution is not None:
        entry["prime_imports"] = prime_attribution
    if target.invokable and first_attribution is not None:
        invoke_probe = slot["invoke_probe"]
        first, second = summarize(slot["first_ms"]), summarize(slot["second_ms"])
        entry["first_invoke"] = {
            # Time to the first answer, init (import + hooks) included: an on-demand
            # cold start.
            "import_plus_first_ms": summarize(slot["cold_total_ms"]),
            "prime_ms": summarize(slot["invoke_prime_ms"]),
            "first_ms": first,
            "second_ms": second,
            "first_over_warm": _ratio(first["median"], second["median"]),
            "loaded_after": invoke_probe["modules_after_invoke"],
            "peak_rss_mb": round(invoke_probe["peak_rss_kb"] / 1024.0, 1),
            "imports": first_attribution,
        }
    if target.snapstart and slot["restore_ms"]:
        first, second = summarize(slot["restored_first_ms"]), summarize(slot["restored_second_ms"])
        entry["restore"] = {
            # After the snapshot: the after-restore hooks, then the first answer.
            "restore_plus_first_ms": summarize(slot["restored_total_ms"]),
            "restore_ms": summarize(slot["restore_ms"]),
            "first_ms": first,
            "second_ms": second,
            "first_over_warm": _ratio(first["median"], second["median"]),
        }
    return entry


def ratios(modules: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue-11 ratios (medians of one run): the agent function against the naive one.

    * ``cold_over_naive``: init (import + hooks) + first answer of the agent function,
      over import + first answer of the naive handler: an on-demand cold start.
    * ``restored_over_naive``: after-restore hooks + first answer (what a SnapStart
      cold start runs in Python; Lambda's own restore of the snapshot is not included,
      it cannot be measured here), over the same naive figure.
    * ``first_over_warm`` / ``restored_first_over_warm``: the first invoke after init
      (after restore) over a warm (second) invoke.
    """
    by_label = {m["label"]: m for m in modules}
    agent, naive = by_label.get("api"), by_label.get("naive")
    if not agent or not naive or not agent["first_invoke"] or not naive["first_invoke"]:
        return {}
    naive_total = naive["first_invoke"]["import_plus_first_ms"]["median"]
    restore = agent.get("restore") or {}
    return {
        "cold_over_naive": _ratio(
            agent["first_invoke"]["import_plus_first_ms"]["median"], naive_total
        ),
        "restored_over_naive": _ratio(
            (restore.get("restore_plus_first_ms") or {}).get("median"), naive_total
        ),
        "first_over_warm": agent["first_invoke"]["first_over_warm"],
        "restored_first_over_warm": restore.get("first_over_warm"),
        "init_ms": agent["init_ms"]["median"],
        "platform_openai_after_init": by_label.get("platform", {}).get("openai_after_init"),
        "targets": {
            "cold_over_naive": TARGET_COLD_OVER_NAIVE,
            "first_over_warm": TARGET_FIRST_OVER_WARM,
        },
    }


def _check_invokes(target: Target, probe: dict[str, Any]) -> None:
    statuses = [call["status"] for call in probe.get("invokes", [])]
    if statuses != [200, 200]:
        raise RuntimeError(f"{target.module} answered {statuses} to the triage event")

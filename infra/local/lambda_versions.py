"""Versions of a local function, the weighted alias in front of them, and what each one did.

On AWS a canary is a second published version of the function and a weighted
alias (``live``) that sends a share of the invocations to it. The local runtime
does the same (:class:`infra.local.lambda_runtime.LambdaRuntime`): each function
has a *primary* version (``$LATEST`` at start) and at most a few more; an
unqualified invocation goes through the alias, which picks a version by weight.

The pick is a smooth weighted round robin, not a coin toss: with weights 0.9/0.1
exactly one invocation in ten goes to the candidate, so a canary of N requests gets
its share every time (Lambda's alias is random; a test of ours must not be).

Per version, :class:`VersionRecord` counts what the release gate judges: requests,
errors (function errors and 5xx answers), durations, and cost per task, from the
answers' ``cost_usd`` or, where the function emits them, from its EMF
``CostMicroUSD`` / ``Tasks`` / ``TaskErrors`` metrics (the worker's jobs answer SQS,
not a person, so only their metrics carry the cost).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.local.lambda_pool import Pool
from infra.local.lambda_types import FunctionConfig, FunctionNotFound

#: Durations kept per version for the p90 (the newest ones).
MAX_DURATIONS = 10_000
#: The qualifiers that mean "through the alias" (None: an unqualified invocation).
ALIAS_NAMES = frozenset({"live"})
PRIMARY = "$LATEST"


def _answer(payload: Any) -> tuple[int | None, dict[str, Any] | None]:
    """(HTTP status, decoded JSON body) of an API Gateway proxy answer; (None, None) if not one."""
    if not isinstance(payload, Mapping) or "statusCode" not in payload:
        return None, None
    try:
        status = int(payload.get("statusCode") or 200)
    except (TypeError, ValueError):
        return None, None
    body: Any = payload.get("body")
    try:
        decoded = json.loads(body) if isinstance(body, str) and body else None
    except ValueError:
        decoded = None
    return status, decoded if isinstance(decoded, dict) else None


@dataclass
class VersionRecord:
    """What one version did since its counters were last reset (thread-safe)."""

    requests: int = 0
    errors: int = 0
    durations_ms: list[float] = field(default_factory=list)
    #: From the answers (``cost_usd`` of 2xx bodies).
    answer_cost_usd: float = 0.0
    answer_tasks: int = 0
    #: From the function's EMF lines (part of the metric contract).
    metric_cost_micro_usd: float = 0.0
    metric_tasks: int = 0
    metric_task_errors: int = 0
    #: Release ids and models seen in the answers (``agent.release``, ``model``).
    releases: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        with self._lock:
            self.requests = self.errors = 0
            self.durations_ms = []
            self.answer_cost_usd = self.metric_cost_micro_usd = 0.0
            self.answer_tasks = self.metric_tasks = self.metric_task_errors = 0
            self.releases, self.models = set(), set()

    def record(self, error: Any, payload: Any, duration_ms: float) -> None:
        status, body = _answer(payload)
        with self._lock:
            self.requests += 1
            if error is not None or (status is not None and status >= 500):
                self.errors += 1
            self.durations_ms.append(duration_ms)
            if len(self.durations_ms) > MAX_DURATIONS:
                del self.durations_ms[: len(self.durations_ms) - MAX_DURATIONS]
            if body is None or status is None or status >= 300:
                return
            cost = body.get("cost_usd")
            if isinstance(cost, int | float | str) and not isinstance(cost, bool):
                try:
                    self.answer_cost_usd += float(cost)
                    self.answer_tasks += 1
                except ValueError:
                    pass
            agent = body.get("agent")
            if isinstance(agent, Mapping) and isinstance(agent.get("release"), str):
                self.releases.add(str(agent["release"]))
            if isinstance(body.get("model"), str):
                self.models.add(str(body["model"]))

    def record_metrics(self, document: Mapping[str, Any]) -> None:
        """Take ``CostMicroUSD`` / ``Tasks`` / ``TaskErrors`` from one EMF document."""
        meta = document.get("_aws")
        if not isinstance(meta, Mapping):
            return
        names = {
            str(metric.get("Name"))
            for directive in meta.get("CloudWatchMetrics") or []
            for metric in directive.get("Metrics") or []
        }
        if "Tasks" not in names:  # the per-task contract; other lines are not a task
            return
        with self._lock:
            self.metric_cost_micro_usd += _total(document.get("CostMicroUSD"))
            self.metric_tasks += int(_total(document.get("Tasks")))
            self.metric_task_errors += int(_total(document.get("TaskErrors")))

    def snapshot(self) -> dict[str, Any]:
        """Plain figures: what ``stratus canary`` shows and turns into ``VersionStats``."""
        with self._lock:
            if self.metric_tasks:
                cost, tasks, source = self.metric_cost_micro_usd / 1e6, self.metric_tasks, "metrics"
            else:
                cost, tasks, source = self.answer_cost_usd, self.answer_tasks, "answers"
            return {
                "requests": self.requests,
                # A failed job is a task error without a function error; a failed answer is
                # both: the larger count, never the sum.
                "errors": max(self.errors, self.metric_task_errors),
                "durations_ms": list(self.durations_ms),
                "cost_usd": cost,
                "tasks": tasks,
                "cost_source": source,
                "releases": sorted(self.releases),
                "models": sorted(self.models),
            }


def _total(value: Any) -> float:
    values = value if isinstance(value, list) else [value]
    return float(sum(v for v in values if isinstance(v, int | float) and not isinstance(v, bool)))


class Alias:
    """Weights over version labels; picks one per invocation (smooth weighted round robin)."""

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}
        #: A version that gets a copy of every aliased invocation (its answer is dropped).
        self.shadow: str | None = None
        self._current: dict[str, float] = {}
        self._lock = threading.Lock()

    def set(self, weights: Mapping[str, float], shadow: str | None = None) -> None:
        with self._lock:
            self.weights = {k: float(v) for k, v in weights.items() if float(v) > 0}
            self.shadow = shadow
            self._current = dict.fromkeys(self.weights, 0.0)

    def pick(self, primary: str) -> str:
        with self._lock:
            if not self.weights:
                return primary
            total = sum(self.weights.values())
            for label, weight in self.weights.items():
                self._current[label] += weight
            chosen = max(self._current, key=lambda label: self._current[label])
            self._current[chosen] -= total
            return chosen

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"weights": dict(self.weights), "shadow": self.shadow}


@dataclass
class Version:
    """One version of a function: its config, code directory, workers and counters."""

    label: str
    config: FunctionConfig
    pool: Pool
    cwd: Path
    record: VersionRecord = field(default_factory=VersionRecord)


class VersionTable:
    """The versions of every function and their aliases (the base of ``LambdaRuntime``)."""

    def __init__(
        self,
        functions: Iterable[FunctionConfig],
        *,
        cwd: Path,
        default_concurrency: int,
        drain_timeout_s: float,
        init_parallelism: int | None = None,
    ) -> None:
        self._functions: dict[str, FunctionConfig] = {}
        for config in functions:
            if config.name in self._functions:
                raise ValueError(f"function {config.name!r} configured twice")
            self._functions[config.name] = config
        if default_concurrency < 1:
            raise ValueError("default_concurrency must be at least 1")
        self._default_concurrency = default_concurrency
        self._init_parallelism = init_parallelism
        self._cwd = cwd
        self._drain_timeout_s = drain_timeout_s
        #: name -> version label -> version; the primary version's label; the alias.
        self._versions = {
            name: {PRIMARY: self._new_version(PRIMARY, config, cwd)}
            for name, config in self._functions.items()
        }
        self._primary = dict.fromkeys(self._functions, PRIMARY)
        self._aliases = {name: Alias() for name in self._functions}
        self._published = dict.fromkeys(self._functions, 0)
        self._versions_lock = threading.Lock()

    def function(self, name: str) -> FunctionConfig:
        """The configuration of ``name``'s primary version."""
        try:
            return self._functions[name]
        except KeyError:
            raise FunctionNotFound(f"Function not found: {name}") from None

    def _new_version(self, label: str, config: FunctionConfig, cwd: Path) -> Version:
        limit = config.max_concurrency or self._default_concurrency
        return Version(label, config, Pool(config, limit, starts=self._init_parallelism), cwd)

    def versions(self, name: str) -> dict[str, Any]:
        """``{"primary", "versions", "alias": {"weights", "shadow"}}`` of ``name``."""
        self.function(name)
        with self._versions_lock:
            return {
                "primary": self._primary[name],
                "versions": list(self._versions[name]),
                "alias": self._aliases[name].to_json(),
            }

    def add_version(
        self, name: str, config: FunctionConfig | None = None, *, cwd: str | Path | None = None
    ) -> str:
        """Publish another version of ``name`` (default: the primary's config) and return its
        label (``"1"``, ``"2"`` ...). It gets no traffic until :meth:`route` gives it a weight;
        a ``Qualifier`` reaches it at once. ``cwd``: its code directory (a git ref's tree)."""
        base = self.function(name)
        config = dataclasses.replace(config or base, name=name)
        with self._versions_lock:
            self._published[name] += 1
            label = str(self._published[name])
            where = Path(cwd).resolve() if cwd is not None else self._cwd
            self._versions[name][label] = self._new_version(label, config, where)
        return label

    def route(self, name: str, weights: Mapping[str, float], *, shadow: str | None = None) -> None:
        """Set the alias: version label -> weight (any scale; 0 or absent: none), and
        optionally a ``shadow`` version that gets a copy of every aliased invocation."""
        self.function(name)
        with self._versions_lock:
            known = self._versions[name]
            unknown = sorted({*weights, *([shadow] if shadow else [])} - set(known))
            if unknown:
                raise FunctionNotFound(f"Function not found: {name}:{','.join(unknown)}")
            if any(float(w) < 0 for w in weights.values()):
                raise ValueError("weights must not be negative")
            if not any(float(w) > 0 for w in weights.values()):
                raise ValueError("at least one version needs a positive weight")
            self._aliases[name].set(weights, shadow)

    def promote(self, name: str, label: str) -> None:
        """``label`` becomes the primary version with all the traffic; the old ones are
        drained (in-flight invocations finish) and stopped."""
        self.function(name)
        with self._versions_lock:
            if label not in self._versions[name]:
                raise FunctionNotFound(f"Function not found: {name}:{label}")
            self._primary[name] = label
            self._functions[name] = self._versions[name][label].config
            self._aliases[name].set({})
            old = [v for k, v in self._versions[name].items() if k != label]
            self._versions[name] = {label: self._versions[name][label]}
        for version in old:
            version.pool.drain(self._drain_timeout_s)
            version.pool.stop(5.0)

    def drop_version(self, name: str, label: str) -> None:
        """Take ``label`` out of the alias and stop it (the primary cannot be dropped)."""
        self.function(name)
        with self._versions_lock:
            if label == self._primary[name]:
                raise ValueError(f"{name}:{label} is the primary version")
            version = self._versions[name].pop(label, None)
            if version is None:
                raise FunctionNotFound(f"Function not found: {name}:{label}")
            alias = self._aliases[name]
            weights = {k: w for k, w in alias.weights.items() if k != label}
            alias.set(weights, None if alias.shadow == label else alias.shadow)
        version.pool.drain(self._drain_timeout_s)
        version.pool.stop(5.0)

    def version_stats(self, name: str, *, reset: bool = False) -> dict[str, dict[str, Any]]:
        """Version label -> what it did (:meth:`VersionRecord.snapshot`); ``reset`` zeroes
        the counters after reading them (a canary's window starts)."""
        self.function(name)
        with self._versions_lock:
            versions = list(self._versions[name].values())
        stats = {}
        for version in versions:
            stats[version.label] = version.record.snapshot()
            if reset:
                version.record.reset()
        return stats

    def _resolve(self, name: str, qualifier: str | None) -> tuple[Version, Version | None]:
        """(the version to run, a shadow to copy the event to)."""
        self.function(name)
        with self._versions_lock:
            versions = self._versions[name]
            if qualifier is None or qualifier in ALIAS_NAMES:
                alias = self._aliases[name]
                label = alias.pick(self._primary[name])
                shadow = versions.get(alias.shadow) if alias.shadow else None
                return versions[label], shadow
            if qualifier == PRIMARY:
                return versions[self._primary[name]], None
            if qualifier not in versions:
                raise FunctionNotFound(f"Function not found: {name}:{qualifier}")
            return versions[qualifier], None

    def _all_pools(self) -> list[Pool]:
        with self._versions_lock:
            return [v.pool for versions in self._versions.values() for v in versions.values()]

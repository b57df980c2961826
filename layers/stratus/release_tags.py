"""The release an answer came from, on everything a task leaves behind.

Every answer (invoke, session turn, job), log line and per-task metric carries the
agent's ``release`` (:mod:`stratus.releases`: a content hash) and its
``prompt_version``. The services get their release from the composition root
(:meth:`stratus.composition.Runtime.release_for`, once per process); one built
directly (a test, a script) hashes its own spec on first use.

Per finished task this module emits, in one EMF document of its own (namespace
``Stratus``, dimensions exactly ``agent`` and ``release``, no ``service``), the
metrics the release gate's alarms read:

* ``Tasks`` (1), ``TaskErrors`` (1 for a failed task, 0 otherwise: its average is the
  error rate, its sum the count),
* ``CostMicroUSD`` (the task's cost in micro-USD; a task that failed before it knew
  its cost reports none).

A *task* is an invoke answer, a session turn or a finished job. A refusal of the
caller's request (a 4xx: input too large, a budget spent, a busy session) is not a
task of the release and emits nothing; a failure of the agent (5xx, or anything
unexpected) is a ``TaskErrors``.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING

from stratus import after_response
from stratus.flags.decisions import served_prompt_version
from stratus.observability import NAMESPACE, logger

if TYPE_CHECKING:
    from stratus.agents import AgentSpec
    from stratus.config import Settings

TASKS = "Tasks"
TASK_ERRORS = "TaskErrors"
COST = "CostMicroUSD"


class ReleaseTagged:
    """A service of one agent that knows the release it serves (``spec``, ``_settings``)."""

    spec: AgentSpec
    _settings: Settings
    _release: str | None = None

    @property
    def release(self) -> str:
        if self._release is None:
            from stratus.releases import release_of

            self._release = release_of(self.spec, self._settings)
        return self._release

    @release.setter
    def release(self, value: str) -> None:
        self._release = value

    @property
    def release_fields(self) -> dict[str, str]:
        """``{"release", "prompt_version"}`` of this service's agent; the prompt version is
        the one this request is served with (a ``prompt_version`` flag may choose another)."""
        return {"release": self.release, "prompt_version": served_prompt_version(self.spec)}


def tag_logger(release: str, prompt_version: str) -> None:
    """Add ``release`` and ``prompt_version`` to every log line of this request (the
    handlers' ``inject_lambda_context(clear_state=True)`` clears them per request)."""
    logger.append_keys(release=release, prompt_version=prompt_version)


def is_task_error(exc: BaseException) -> bool:
    """Whether a failure counts against the release (not a refusal of the caller's request)."""
    status = getattr(exc, "status", None)
    return not isinstance(status, int) or status >= 500


def emit_task(agent: str, release: str, *, cost_usd: Decimal | None, failed: bool) -> None:
    """One finished task's ``Tasks``, ``TaskErrors`` and ``CostMicroUSD`` (EMF; after the
    answer on Lambda: :func:`stratus.after_response.later`)."""
    after_response.later(partial(_emit_task, agent, release, cost_usd=cost_usd, failed=failed))


def _emit_task(agent: str, release: str, *, cost_usd: Decimal | None, failed: bool) -> None:
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    try:
        # Its own metric set: the function's shared one carries other dimensions.
        emf = EphemeralMetrics(namespace=NAMESPACE, service="")
        emf.add_dimension(name="agent", value=agent)
        emf.add_dimension(name="release", value=release or "unknown")
        emf.add_metric(name=TASKS, unit=MetricUnit.Count, value=1)
        emf.add_metric(name=TASK_ERRORS, unit=MetricUnit.Count, value=1 if failed else 0)
        if cost_usd is not None:
            emf.add_metric(name=COST, unit=MetricUnit.Count, value=float(cost_usd * 10**6))
        emf.flush_metrics()
    except Exception:  # a metric never fails the task it describes
        logger.exception("emitting the task metrics failed")

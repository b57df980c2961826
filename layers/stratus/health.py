"""What ``GET /v1/health`` reports: each dependency of this function, ``ok`` or ``error``.

A probe is a callable that raises when its dependency is unusable; the
composition root says which probes a function has (its tables, and for agent
functions the model key secret). Failures are logged by type, never with data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from stratus.observability import logger

Probe = Callable[[], object]


def run_checks(probes: Mapping[str, Probe]) -> dict[str, str]:
    """``label -> "ok" | "error"`` for every probe, in order; never raises."""
    checks: dict[str, str] = {}
    for label, probe in probes.items():
        try:
            probe()
        except Exception as exc:  # a health check reports failures, it does not raise them
            logger.warning(
                "health check failed", extra={"check": label, "error": type(exc).__name__}
            )
            checks[label] = "error"
        else:
            checks[label] = "ok"
    return checks

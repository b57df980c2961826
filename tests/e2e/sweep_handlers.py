"""A job worker that is SIGKILLed halfway (the local cloud runs it as the triage worker).

Between the model call and recording the step, the worker process kills itself
with SIGKILL (no cleanup, no response) when the job's input says so:
``SIGKILL-FIRST`` on the job's first claim only, ``SIGKILL-ALWAYS`` on every claim.
"""

from __future__ import annotations

import os
import signal
from typing import Any

_patched = False


def _kill_between_the_model_and_the_record() -> None:
    from stratus.jobs import DynamoJobStore

    original = DynamoJobStore.record_step

    def record_step(self: DynamoJobStore, job_id: str, step: str, **kwargs: Any) -> bool:
        job = self.get(job_id) or {}
        text = str(job.get("input"))
        if "SIGKILL-ALWAYS" in text or ("SIGKILL-FIRST" in text and job.get("attempts") == 1):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, job_id, step, **kwargs)

    DynamoJobStore.record_step = record_step  # type: ignore[method-assign]


def killed_worker(event: dict[str, Any], context: Any) -> Any:
    from functions.handlers.worker import lambda_handler

    global _patched
    if not _patched:
        _kill_between_the_model_and_the_record()
        _patched = True
    return lambda_handler(event, context)

"""The sweeps, on a schedule (EventBridge, every minute; the local cloud runs it too).

Jobs whose worker died are re-queued or failed with ``lease_expired``
(:class:`stratus.jobs.sweep.LeaseSweeper`, ``composition.current().job_sweeper``), and
expired budget reservations of every tenant and agent are given back
(:meth:`stratus.budgets.BudgetLedger.sweep_expired`). Any event triggers one pass of
each; the answer is what they did.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus import composition
from stratus.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    runtime = composition.current()
    report = runtime.job_sweeper.sweep().as_dict()
    logger.info("lease sweep", extra=report)
    if runtime.settings.budgets_table:
        budgets = runtime.budgets.sweep_expired(
            tenant_ids=runtime.tenants.tenant_ids(), agents=sorted(runtime.settings.job_queues)
        )
        logger.info("budget sweep", extra={"released": budgets.released})
        report = {
            **report,
            "budgets_checked": budgets.checked,
            "reservations_released": budgets.released,
        }
    return report

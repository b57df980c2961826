"""Budget threshold alerts: one per threshold per period, whoever crosses it.

A settlement's ``ADD spent`` returns the new total, so exactly one call sees each
threshold crossed (``before < t <= after``) and sends its alert, with no marker item.
The 100% alert comes either from spend reaching the limit or from the first refusal
at it, so it takes a conditional marker on the item (``exhausted_alerted``) to be
sent once. Alerts are the rare path: they run after the settlement's wave.
"""

from __future__ import annotations

from decimal import Decimal

from stratus.agents import CallScope
from stratus.budget_scopes import BudgetScope, from_nano, iso
from stratus.config import Settings
from stratus.gateway_stores.ports import AlertPublisher, BudgetStore
from stratus.observability import NAMESPACE, SERVICE, logger
from stratus.task_metrics import budget_burn


class ThresholdAlerts:
    """The operator alerts of :class:`stratus.budgets.BudgetLedger`."""

    def __init__(
        self, settings: Settings, store: BudgetStore | None, publisher: AlertPublisher
    ) -> None:
        self._settings = settings
        self._store = store
        self._publisher = publisher

    def settled(
        self,
        budget: BudgetScope,
        spent: Decimal,
        actual: Decimal,
        scope: CallScope | None,
        agent: str,
    ) -> None:
        """The alerts of the thresholds this settlement (``spent`` after it) crossed."""
        if budget.job_cap:
            return  # the job's own cap: the client's limit, not an operator's budget
        budget_burn(budget.name, spent, budget.limit, agent)  # BudgetBurnPct: task_metrics
        before = spent - actual
        for threshold in self._settings.budget_alert_thresholds:
            mark = budget.limit * threshold / 100
            if before < mark <= spent:
                if threshold >= 100:
                    # Shared with refusals at the limit: one marker, one alert.
                    self.exhausted(budget, scope, agent)
                else:
                    self._alert(budget, threshold, spent, scope, agent)

    def exhausted(self, budget: BudgetScope, scope: CallScope | None, agent: str) -> None:
        """The 100% alert (spend reached the limit, or the limit refused a call), once."""
        if 100 not in self._settings.budget_alert_thresholds or self._store is None:
            return
        try:
            spent = self._store.mark_exhausted(budget.key)
        except Exception:
            logger.exception("budget alert marker failed", extra={"budget": budget.key})
            return
        if spent is not None:  # None: another call already sent this alert
            self._alert(budget, 100, from_nano(spent), scope, agent)

    def _alert(
        self,
        budget: BudgetScope,
        threshold: int,
        spent: Decimal,
        scope: CallScope | None,
        agent: str,
    ) -> None:
        message = {
            "type": "stratus.budget.threshold",
            "budget": budget.name,
            "key": budget.key,
            "threshold_percent": threshold,
            "spent_usd": str(spent),
            "limit_usd": str(budget.limit),
            "resets_at": iso(budget.resets_at),
            "tenant_id": scope.tenant_id if scope else None,
            "agent": agent,
            "stage": self._settings.stage,
        }
        logger.warning("budget threshold crossed", extra=message)
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        metrics.add_dimension(name="budget", value=budget.name)
        metrics.add_metric(name="BudgetAlerts", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
        try:
            self._publisher.publish(f"Stratus budget {budget.name} at {threshold}%", message)
        except Exception:  # an alert must never fail the call that triggered it
            logger.exception("budget alert could not be published")

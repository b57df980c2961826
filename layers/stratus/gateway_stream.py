"""The gateway's one extra rule for streamed calls (issue 17).

A stream that broke after text reached the caller (:class:`stratus.llm_stream.StreamBroken`)
was paid for: instead of releasing the reservation, the post-call writes settle it to
the estimated usage the error carries (and add that usage to the unit's rollup), in the
same one wave a failed call's release would take. Never twice: the failure path is the
only one that runs for that call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stratus.gateway_bookkeeping import Write

if TYPE_CHECKING:
    from stratus.agents import CallScope
    from stratus.budgets import BudgetLedger, Reservation
    from stratus.llm_stream import StreamBroken
    from stratus.prices import PriceTable
    from stratus.rollups import UsageRollups


def broken_stream_writes(
    budgets: BudgetLedger,
    rollups: UsageRollups,
    prices: PriceTable,
    reservation: Reservation,
    error: StreamBroken,
    scope: CallScope | None,
    agent: str,
) -> list[Write]:
    """The settlement (and rollup) of a broken stream's estimated usage."""
    model, usage = error.model, error.usage
    cost = prices.cost(model, usage)
    return [
        (
            "budget settlement",
            lambda: budgets.settle(
                reservation, cost, scope=scope, agent=agent, model=model, usage=usage
            ),
        ),
        (
            "usage rollup",
            lambda: rollups.record(scope=scope, agent=agent, model=model, usage=usage, cost=cost),
        ),
    ]

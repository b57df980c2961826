"""The order lookup tool: one DynamoDB read, scoped to the caller's tenant.

The table's partition key is the tenant id, taken from the authorizer and never
from the model or the user, so an agent can only ever see its tenant's orders.

End-customer scoping: when the caller's key is bound to an end customer
(``ToolContext.customer_id``, from the authorizer, never from the model), only that
customer's orders are found; another customer's order of the same tenant answers
exactly like a missing one (``order_not_found``), so its existence does not leak.

Tool permissions: only keys with the ``support`` or ``customer`` role (or a key without
a role, the tenant's own) may use ``lookup_order``; a ``viewer`` key is never offered it,
and a call the model makes anyway is refused (``tool_not_permitted``) and audited.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from stratus.agents import Tool, ToolContext
from stratus.aws import AwsClients
from stratus.errors import ConfigurationError

#: What the model sees for a missing order and for another end customer's (the same).
ORDER_NOT_FOUND = "order_not_found"
#: The key roles that may look orders up (a key without a role may too).
LOOKUP_ROLES = frozenset({"support", "customer"})


class LookupOrderArgs(BaseModel):
    order_id: str = Field(min_length=1, max_length=64, description="The order id, e.g. A-1001.")


def lookup_order(args: LookupOrderArgs, ctx: ToolContext) -> dict[str, Any]:
    if not ctx.settings.orders_table:
        raise ConfigurationError("STRATUS_ORDERS_TABLE is not set for this function")
    clients = ctx.clients or AwsClients()
    item = clients.table(ctx.settings.orders_table).get(
        {"tenant_id": ctx.tenant_id, "order_id": args.order_id.strip()}, consistent=False
    )
    if item is None or (ctx.customer_id is not None and item.get("customer_id") != ctx.customer_id):
        return {"found": False, "order_id": args.order_id, "error": ORDER_NOT_FOUND}
    return {
        "found": True,
        "order_id": item["order_id"],
        "status": item.get("status"),
        "carrier": item.get("carrier"),
        "eta": item.get("eta"),
        "items": item.get("items", []),
    }


LOOKUP_ORDER = Tool(
    name="lookup_order",
    description="Look up an order of the current customer by its id.",
    args=LookupOrderArgs,
    fn=lookup_order,
    resources=frozenset({"orders_table"}),
    roles=LOOKUP_ROLES,
)

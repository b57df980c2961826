"""The caller as the domain sees it: :class:`stratus.agents.Principal` from the authorizer.

The key id, its role (which tools the model is offered) and the end customer the key is
bound to come from the authorizer's context (:func:`functions.handlers.common.caller`),
never from the body, a header or the path.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from functions.handlers.common import caller
from stratus.agents import Principal


def principal(event: APIGatewayProxyEvent) -> Principal:
    who = caller(event)
    return Principal(key_id=who.key_id, role=who.role, customer_id=who.customer_id, tier=who.tier)

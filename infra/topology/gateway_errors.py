"""Errors API Gateway answers itself, in the handlers' error shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stratus.errors import (
    PayloadTooLarge,
    RouteNotFound,
    StratusError,
    Unauthorized,
    ValidationFailed,
)
from stratus.tenant_keys import WrongRegion


@dataclass(frozen=True)
class GatewayError:
    """An error API Gateway answers itself, in the handlers' error shape.

    The CDK stack turns each into a gateway response; the local gateway answers
    the same status, code and message for the same situation.
    """

    name: str
    #: The API Gateway response type (``UNAUTHORIZED``, ``DEFAULT_4XX``, ...).
    response_type: str
    #: None keeps the status API Gateway chose (the DEFAULT_* families).
    status: int | None
    code: str
    #: A literal message, or a ``$context`` variable that API Gateway substitutes.
    message: str
    #: True if ``message`` is a variable that already yields a quoted JSON string.
    message_is_json: bool = False
    #: ``details`` fields as (name, ``$context.authorizer.<key>``): what the authorizer's
    #: context says about the refusal (API Gateway substitutes them on a Deny).
    details: tuple[tuple[str, str], ...] = ()

    def template(self) -> str:
        """The response template: valid JSON once API Gateway substitutes the variables."""
        sentinel = "__STRATUS_MESSAGE__"
        text = json.dumps(
            self.body("$context.requestId", sentinel if self.message_is_json else None),
            separators=(",", ":"),
        )
        return text.replace(f'"{sentinel}"', self.message) if self.message_is_json else text

    def body(
        self,
        request_id: str,
        message: str | None = None,
        authorizer: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body, with ``message`` replacing the default (local gateway); with
        ``authorizer`` (a Deny's context), the ``details`` variables substituted from it."""
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message if message is None else message,
            "request_id": request_id,
        }
        if self.details:
            error["details"] = {
                name: variable
                if authorizer is None
                else str(authorizer.get(variable.removeprefix(AUTHORIZER_VARIABLE)) or "")
                for name, variable in self.details
            }
        return {"error": error}


#: The prefix of the variables naming a key of the Lambda authorizer's context.
AUTHORIZER_VARIABLE = "$context.authorizer."


#: Status codes and codes come from ``stratus.errors`` where the handlers have them.
GATEWAY_ERRORS: tuple[GatewayError, ...] = (
    GatewayError(
        "Unauthorized",
        "UNAUTHORIZED",
        Unauthorized.status,
        Unauthorized.code,
        "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
    ),
    # The authorizer's only Deny: a key of a tenant homed in another region (its context
    # names the home region). Gateway response templates are plain substitution, no VTL:
    # a second Deny reason would need its own code here. Missing scopes are the handlers'
    # own 403 ``forbidden``.
    GatewayError(
        "AccessDenied",
        "ACCESS_DENIED",
        WrongRegion.status,
        WrongRegion.code,
        "This key's tenant lives in another region: call its home region's endpoint.",
        details=(("home_region", f"{AUTHORIZER_VARIABLE}home_region"),),
    ),
    # API Gateway's answer for a route that does not exist (not only for missing tokens).
    GatewayError(
        "MissingAuthenticationToken",
        "MISSING_AUTHENTICATION_TOKEN",
        RouteNotFound.status,
        RouteNotFound.code,
        "No such route.",
    ),
    GatewayError(
        "RequestTooLarge",
        "REQUEST_TOO_LARGE",
        PayloadTooLarge.status,
        PayloadTooLarge.code,
        "The request body is too large.",
    ),
    # validationErrorString comes JSON-escaped from API Gateway; it goes inside quotes.
    GatewayError(
        "BadRequestBody",
        "BAD_REQUEST_BODY",
        ValidationFailed.status,
        ValidationFailed.code,
        "$context.error.validationErrorString",
    ),
    GatewayError("Throttled", "THROTTLED", 429, "throttled", "Too many requests; retry later."),
    GatewayError(
        "IntegrationTimeout",
        "INTEGRATION_TIMEOUT",
        504,
        "timeout",
        "The agent did not answer in time; use an asynchronous job for long work.",
    ),
    # Any other 4xx API Gateway produces keeps its status; messageString is quoted JSON.
    GatewayError(
        "Default4xx",
        "DEFAULT_4XX",
        None,
        "bad_request",
        "$context.error.messageString",
        message_is_json=True,
    ),
    GatewayError(
        "Default5xx", "DEFAULT_5XX", None, StratusError.code, "An internal error occurred."
    ),
)


def gateway_error(response_type: str) -> GatewayError:
    """The gateway error for an API Gateway response type, e.g. ``UNAUTHORIZED``."""
    for error in GATEWAY_ERRORS:
        if error.response_type == response_type:
            return error
    raise KeyError(f"no gateway error for {response_type!r}")

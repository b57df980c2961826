"""One correlation id per unit of work, end to end (API, jobs, queues, workflows, callbacks).

The id comes from the caller's ``X-Correlation-Id`` header when it matches
:data:`PATTERN` (``^[A-Za-z0-9._:-]{1,128}$``); otherwise a new one is generated (32
hex characters). It is then:

* returned in the response header ``X-Correlation-Id`` (every API answer, errors too);
* stored on the job record as ``correlation_id`` (routed child jobs inherit it) and shown
  by ``GET /v1/jobs/{id}``;
* carried as the SQS message attribute ``correlation_id`` (String) of the job and
  callback messages, in the Step Functions execution input, in SNS job events (field and
  message attribute) and as the ``X-Correlation-Id`` header of callback requests;
* on every log line (Powertools ``logger.set_correlation_id``), and an X-Ray annotation
  ``correlation_id`` when tracing is active.

:func:`bind` makes an id the current one (a ContextVar: a worker thread of a batch, a
request); :func:`current` reads it. Pure helpers, no I/O, nothing imported lazily.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from stratus.observability import logger, tracer

#: The HTTP header (request and response) and the field / attribute name everywhere else.
HEADER = "X-Correlation-Id"
FIELD = "correlation_id"
PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_current: ContextVar[str | None] = ContextVar("stratus_correlation_id", default=None)


def new_id() -> str:
    """A fresh id: 32 hex characters."""
    return uuid.uuid4().hex


def valid(value: Any) -> str | None:
    """``value`` if it is an acceptable id (a string matching :data:`PATTERN`), else None."""
    if isinstance(value, str) and PATTERN.fullmatch(value):
        return value
    return None


def accept(value: Any) -> str:
    """The caller's id if it is acceptable, else a new one."""
    return valid(value) or new_id()


def header_value(
    headers: Mapping[str, Any] | None, multi: Mapping[str, Any] | None = None
) -> str | None:
    """The acceptable ``X-Correlation-Id`` of request headers (case-insensitive), or None."""
    for section in (headers or {}, multi or {}):
        for name, value in section.items():
            if str(name).lower() == HEADER.lower():
                if isinstance(value, list):
                    value = value[-1] if value else None
                return valid(value)
    return None


def from_headers(headers: Mapping[str, Any] | None, multi: Mapping[str, Any] | None = None) -> str:
    """The id of an API Gateway proxy event's headers (case-insensitive), or a new one."""
    return header_value(headers, multi) or new_id()


def from_event(event: Mapping[str, Any]) -> str:
    """The id of an API Gateway REST proxy event (``X-Correlation-Id``), or a new one. An
    internal invocation (a streamed request: ``stratus_stream``) may pass ``correlation_id``
    at the top level or inside ``stratus_stream``."""
    inner = event.get("stratus_stream")
    carried = valid(event.get(FIELD)) or (
        valid(inner.get(FIELD)) if isinstance(inner, Mapping) else None
    )
    return carried or from_headers(event.get("headers"), event.get("multiValueHeaders"))


def bind(correlation_id: str) -> str:
    """Make ``correlation_id`` the current one: the context, every log line (Powertools),
    and the X-Ray annotation when tracing is active. Returns it."""
    _current.set(correlation_id)
    logger.set_correlation_id(correlation_id)
    if not getattr(tracer, "disabled", True):
        try:
            tracer.put_annotation(key=FIELD, value=correlation_id)
        except Exception:  # no segment (outside a traced invocation): nothing to annotate
            logger.debug("no X-Ray segment to annotate")
    return correlation_id


def current() -> str | None:
    """The id bound in this context (None: none yet)."""
    return _current.get()


def clear() -> None:
    """Forget the bound id (a new unit of work that has none yet)."""
    _current.set(None)
    logger.set_correlation_id(None)


# -- carriers ---------------------------------------------------------------------------


def of_record(record: Mapping[str, Any] | None) -> str | None:
    """The id stored on a job record (or an execution input, an SNS event), if valid."""
    return valid((record or {}).get(FIELD)) if record is not None else None


def from_message_attributes(attributes: Mapping[str, Any] | None) -> str | None:
    """The id of SQS message attributes, as Lambda's event (``stringValue``) or boto3's
    ``receive_message`` (``StringValue``) shows them; None when absent or invalid."""
    raw = (attributes or {}).get(FIELD)
    if isinstance(raw, Mapping):
        raw = raw.get("stringValue", raw.get("StringValue"))
    elif raw is not None and not isinstance(raw, str):  # a data class (Powertools)
        raw = getattr(raw, "string_value", None)
    return valid(raw)


def attributes(correlation_id: str | None) -> dict[str, str]:
    """``{"correlation_id": id}`` for a message's string attributes (nothing when None)."""
    return {FIELD: correlation_id} if correlation_id else {}


def headers(correlation_id: str | None) -> dict[str, str]:
    """``{"X-Correlation-Id": id}`` for an outgoing HTTP request (nothing when None)."""
    return {HEADER: correlation_id} if correlation_id else {}


def with_response_header(response: dict[str, Any], correlation_id: str) -> dict[str, Any]:
    """A resolved API Gateway proxy response with ``X-Correlation-Id`` set (both header
    maps when the response uses ``multiValueHeaders``); anything else is returned as is."""
    if "statusCode" not in response:
        return response
    single = response.get("headers")
    response["headers"] = {**(single if isinstance(single, dict) else {}), HEADER: correlation_id}
    multi = response.get("multiValueHeaders")
    if isinstance(multi, dict):
        multi = {k: v for k, v in multi.items() if k.lower() != HEADER.lower()}
        multi[HEADER] = [correlation_id]
        response["multiValueHeaders"] = multi
    return response

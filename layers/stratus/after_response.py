"""Settle after the response: on Lambda, a model call's post-call wave leaves the response path.

A model call's bookkeeping after the call (budget settlement, ledger entry, usage
rollup, the key bucket's unused tokens: :mod:`stratus.gateway_bookkeeping`) is one
DynamoDB round trip. Inside a handler it has to finish before the handler returns,
because Lambda freezes the execution environment as soon as the runtime asks for
the next event: a write still in flight would be frozen with it, and lost if the
environment is never thawed. So the client waits for it.

An **internal extension** keeps the environment awake instead. It is a thread of
the runtime process that registers with Lambda's Extensions API during the init
phase (``POST /2020-01-01/extension/register``, for ``INVOKE`` events; internal
extensions cannot have ``SHUTDOWN``). Lambda then freezes the environment only when
the runtime *and* every extension have asked for their next event. The runtime
posts the handler's answer and asks for the next event as soon as the handler
returns; the client has its answer then. The extension asks for its next event
only once the waves the handler handed it are written:

1. Lambda hands the extension ``INVOKE`` with the request id, while the runtime
   calls the handler.
2. Inside :func:`invocation` (the API handler wraps every request in it), the
   outermost ``gateway_bookkeeping.deferred()`` hands its pending waves over
   (:func:`hand_over`) instead of waiting for them; leaving :func:`invocation`
   tells the extension the handler is done, even when it raised.
3. The extension waits for that hand-over, then for every wave in it, then asks
   for the next event. Both waits end ``DEADLINE_MARGIN_S`` before the invoke's
   deadline at the latest: the extension never holds an environment to its timeout,
   and a wave that could not finish by then is logged (its writes go on when the
   environment is next thawed, like any other in-flight request).
4. Last, still before it asks for the next event, it emits the request's log lines
   and EMF metrics that :func:`later` kept back ("model call", "agent invoked", the
   task metrics): formatting them is CPU the answer no longer waits for. They run in
   the handler's context (correlation id, appended keys), once, even when late.

The next request to the same environment is delivered only after that, so a unit's
next reservation always sees its last settlement, as before. What changes: the
settlement is durable some milliseconds after the client has its answer (the wave's
round trip) instead of before. Another environment that reserves on the same budget
in that window sees the reservation's worst case still held (never less spent than
was); the bench reports the window (``bench/report.md``).

It is on only where Lambda runs it: ``AWS_LAMBDA_RUNTIME_API`` is set (Lambda's
runtime sets it; the local cloud and the tests do not) and
``STRATUS_SETTLE_AFTER_RESPONSE`` is not ``false``. A refused registration, or an
Extensions API that stops answering, leaves the handlers settling before they
return, as they do everywhere else. With SnapStart the extension registers during
the init that runs when the version is published; the snapshot holds its pending
``event/next`` request on the loopback connection to Lambda's in-sandbox API
endpoint, which the restore brings back with it.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

from pydantic import ValidationError

from stratus.config import Settings
from stratus.observability import logger

#: The extension's name in Lambda's logs and its ``Lambda-Extension-Name`` header.
EXTENSION_NAME = "stratus-settle"
API_VERSION = "2020-01-01"
#: How long before an invoke's deadline the extension stops waiting and asks for its
#: next event (Lambda counts the extension's time in the function's timeout).
DEADLINE_MARGIN_S = 0.5
#: How long a registration may take before the handlers settle in-line instead.
REGISTER_TIMEOUT_S = 2.0
#: Attempts at asking for the next event before the extension gives up (the
#: Extensions API is in the sandbox: a failure is a broken environment, not a network).
NEXT_ATTEMPTS = 3


class Pending(Protocol):
    """Work a handler hands over: finished within ``timeout``, or False."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Later:
    """Logs and metrics of a request emitted after its answer, in the handler's context
    (correlation id, request keys): :meth:`wait` runs them once, never raises."""

    def __init__(self, emit: Callable[[], None]) -> None:
        self._emit = emit
        self._context = contextvars.copy_context()

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self._context.run(self._emit)
        except Exception:  # an observability line never fails the request it describes
            logger.exception("emitting after the response failed")
        return True


class ExtensionsApi:
    """The two calls of Lambda's Extensions API an internal extension makes."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port = host or address, int(port) if port.isdigit() else 80

    def register(self, name: str) -> str:
        """Register for ``INVOKE`` events; the extension's identifier."""
        conn = http.client.HTTPConnection(self._host, self._port, timeout=REGISTER_TIMEOUT_S)
        try:
            conn.request(
                "POST",
                f"/{API_VERSION}/extension/register",
                body=json.dumps({"events": ["INVOKE"]}),
                headers={"Lambda-Extension-Name": name, "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            ident = response.getheader("Lambda-Extension-Identifier") or ""
            if response.status != 200 or not ident:
                raise RuntimeError(f"the Extensions API refused to register: {response.status}")
            return ident
        finally:
            conn.close()

    def next_event(self, ident: str) -> dict[str, Any]:
        """Ask for the next event: blocks until Lambda sends one (no timeout: an idle
        environment is frozen inside this call)."""
        conn = http.client.HTTPConnection(self._host, self._port, timeout=None)
        try:
            conn.request(
                "GET",
                f"/{API_VERSION}/extension/event/next",
                headers={"Lambda-Extension-Identifier": ident},
            )
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"the Extensions API answered {response.status} to next")
            event = json.loads(body or b"{}")
            return event if isinstance(event, dict) else {}
        finally:
            conn.close()


class Settler:
    """The extension: the thread that holds each invoke open until its waves are written."""

    def __init__(self, api: ExtensionsApi, ident: str) -> None:
        self._api, self._ident = api, ident
        self._cond = threading.Condition()
        self._handed: dict[str, list[Pending]] = {}
        self._broken = False
        self._closed = False
        #: Invokes whose handler or waves were still running at the deadline.
        self.late = 0
        self._thread = threading.Thread(target=self._loop, name=EXTENSION_NAME, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def working(self) -> bool:
        return not self._broken

    def hand_over(self, request_id: str, pending: Sequence[Pending]) -> None:
        """The handler of ``request_id`` is done; ``pending`` is what is left to write."""
        with self._cond:
            self._handed[request_id] = list(pending)
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            event = self._next()
            if event is None:
                return
            if event.get("eventType") != "INVOKE":
                continue
            try:
                self.settle(event)
            except Exception:  # never keep Lambda waiting on a bug of ours
                logger.exception("settling after the response failed")

    def close(self) -> None:
        """Stop after the current request (tests and the bench; Lambda never stops it)."""
        self._closed = True

    def _next(self) -> dict[str, Any] | None:
        for attempt in range(NEXT_ATTEMPTS):
            try:
                return self._api.next_event(self._ident)
            except Exception as exc:
                if self._closed:
                    return None
                logger.warning(
                    "the Extensions API did not answer next",
                    extra={"attempt": attempt + 1, "error": repr(exc)},
                )
                time.sleep(0.05 * (attempt + 1))
        self._broken = True  # handlers settle before they return from now on
        logger.error("settling after the response is off: the Extensions API is gone")
        return None

    def settle(self, event: dict[str, Any]) -> None:
        """Wait for the hand-over of the event's request, then for what it handed over."""
        request_id = str(event.get("requestId") or "")
        deadline_ms = event.get("deadlineMs")
        until = (  # Lambda's deadline is epoch milliseconds
            float(deadline_ms) / 1000.0 - DEADLINE_MARGIN_S
            if isinstance(deadline_ms, int | float)
            else time.time() + 60.0
        )
        with self._cond:
            handed = self._cond.wait_for(
                lambda: request_id in self._handed, timeout=max(0.0, until - time.time())
            )
            pending = self._handed.pop(request_id, [])
            self._handed.clear()  # an earlier request's, never asked for: nothing waits on it
        waves = [p for p in pending if not isinstance(p, Later)]
        unfinished = sum(not p.wait(max(0.0, until - time.time())) for p in waves)
        # Then the request's logs and metrics (CPU only, never dropped): after the waves,
        # so that they do not compete with the runtime posting the answer.
        for emit in pending:
            if isinstance(emit, Later):
                emit.wait()
        if not handed or unfinished:
            self.late += 1
            logger.error(
                "bookkeeping not written before the invoke's deadline",
                extra={"request_id": request_id, "handler_done": handed, "waves": unfinished},
            )


_settler: Settler | None = None
_lock = threading.Lock()
#: The waves handed over by the request being handled (inside :func:`invocation`).
_collected: ContextVar[list[Pending] | None] = ContextVar("stratus_after_response", default=None)


def start() -> bool:
    """Register the extension and start its thread, in Lambda's init phase only.

    Returns whether settling after the response is on: agent functions only (the
    platform function makes no model call), unless ``settle_after_response`` is off.
    Reads the settings only where Lambda's runtime has set ``AWS_LAMBDA_RUNTIME_API``.
    """
    global _settler
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
    if not address:  # not on Lambda
        return False
    try:
        settings = Settings()
    except ValidationError as exc:  # the request path reports it; settle before answering
        logger.warning("settling after the response is off", extra={"error": repr(exc)})
        return False
    if not settings.agent or not settings.settle_after_response:
        return False
    with _lock:
        if _settler is not None:
            return _settler.working
        api = ExtensionsApi(address)
        try:
            ident = api.register(EXTENSION_NAME)
        except Exception as exc:
            logger.warning(
                "settling after the response is off: registration failed",
                extra={"error": repr(exc)},
            )
            return False
        _settler = Settler(api, ident)
        _settler.start()
        return True


def active() -> Settler | None:
    """The running extension, if settling after the response is on."""
    settler = _settler
    return settler if settler is not None and settler.working else None


@contextlib.contextmanager
def invocation(request_id: str) -> Iterator[None]:
    """Around one invocation of a handler: the waves handed over inside are written after
    the response. Without the extension, nothing is handed over (the waves are waited
    for where they are)."""
    settler = active()
    if settler is None or not request_id:
        yield
        return
    token = _collected.set([])
    try:
        yield
    finally:
        pending = _collected.get() or []
        _collected.reset(token)
        if settler.working:
            settler.hand_over(request_id, pending)
        else:  # the extension broke during this request: write and emit before answering
            for item in pending:
                item.wait()


def collecting() -> bool:
    """Whether the current request's waves will be written after its response."""
    return _collected.get() is not None


def hand_over(pending: Sequence[Pending]) -> bool:
    """Leave ``pending`` to the extension; False outside :func:`invocation` (wait for it)."""
    collected = _collected.get()
    if collected is None:
        return False
    collected.extend(pending)
    return True


def later(emit: Callable[[], None]) -> None:
    """Emit a request's logs and metrics (``emit``) after its answer when the extension
    settles it, in the same context; at once everywhere else. Whatever ``emit`` reads must
    be computed before (a latency, a clock): it runs some milliseconds later."""
    collected = _collected.get()
    if collected is None:
        emit()
        return
    collected.append(Later(emit))


def stop() -> None:
    """Forget the extension (tests; a real one lives as long as its environment)."""
    global _settler
    with _lock:
        if _settler is not None:
            _settler.close()
        _settler = None

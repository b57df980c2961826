"""Job callbacks, delivered asynchronously: one SQS message per finished job.

Finishing a job records ``callback = {"state": "pending", "attempts": 0}`` and puts
``{"version": "1", "job_id", "tenant_id"}`` on the callback queue (its own DLQ);
the callbacks function (:class:`CallbackDelivery`) then, per delivery attempt:

* reads the job and builds its completion event (the body), signed with
  ``X-Stratus-Signature: t=<unix>,kid=<key id>,v1=<hex>`` under **the job's tenant's**
  newest signing key (:mod:`stratus.signing_keys`: one ``Query`` per attempt); a tenant
  without keys of its own (created before them) is signed with the stack-wide
  fallback key, without ``kid``, until its first ``stratus callback-key rotate``;
* resolves the host **once**, refuses unless every address is public and the port
  is 80 or 443 (``callback_allow_private``, the local cloud only, allows loopback and
  any port), then connects to **that address** (:class:`PinnedHttpSender`: the
  original ``Host`` header; for https, TLS with SNI and certificate verification
  for the host name), so a second DNS answer can never redirect the request;
* refuses redirects: any status other than 2xx is a failed attempt;
* records ``{"attempts", "last_status", "delivered_at", "state"}`` on the job
  (``pending`` -> ``delivered``; ``retrying`` -> ``failed`` on the last attempt,
  when the message goes to the DLQ; ``refused`` for a destination never allowed).

Failed attempts come back after the retry backoff (``ChangeMessageVisibility``).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from stratus import correlation
from stratus.config import Settings
from stratus.errors import ConfigurationError
from stratus.jobs.contracts import Clock, now_iso
from stratus.jobs.notifications import SIGNATURE_HEADER, Notifier, resolve, sign
from stratus.jobs.ports import CallbackSender, MessageQueue, Resolver, SecretSource
from stratus.jobs.retries import Delivery, retry_delay_s
from stratus.jobs.store import JobStore
from stratus.observability import logger
from stratus.signing_keys import SigningKeys

ALLOWED_PORTS = frozenset({80, 443})
DONE_STATES = frozenset({"delivered", "failed", "refused"})


class CallbackRefused(Exception):
    """The destination is never allowed (scheme, port, a non-public address)."""


class CallbackFailed(Exception):
    """One delivery attempt failed (connection, timeout, a non-2xx status)."""


@dataclass(frozen=True)
class Destination:
    """A checked callback URL and the one address the request goes to."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    address: str


def destination(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Destination:
    """Resolve ``url``'s host once and check it; :class:`CallbackRefused` if not allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("the callback URL must be http(s) with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackRefused("the callback URL has an invalid port") from None
    if port not in ALLOWED_PORTS and not allow_private:
        raise CallbackRefused(f"port {port} is not allowed (80 and 443 only)")
    try:
        addresses = [ipaddress.ip_address(a) for a in resolver(parts.hostname, port)]
    except ValueError:
        raise CallbackRefused("the host resolved to an invalid address") from None
    if not addresses:
        raise CallbackFailed(f"{parts.hostname} does not resolve")
    if not allow_private and not all(a.is_global for a in addresses):
        raise CallbackRefused("the URL resolves to a non-public address")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, parts.hostname, port, target, str(addresses[0]))


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a fixed address, with SNI and certificate checks for the original host."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class PinnedHttpSender:
    """:class:`~stratus.jobs.ports.CallbackSender`: POST to the checked address only.

    ``http.client`` never follows redirects; the status is returned as is.
    """

    def post(
        self, dest: Destination, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> int:
        kind = _PinnedHTTPSConnection if dest.scheme == "https" else _PinnedHTTPConnection
        connection = kind(dest.host, dest.address, dest.port, timeout_s)
        try:
            connection.request("POST", dest.target, body=body, headers=dict(headers))
            response = connection.getresponse()
            response.read(64 * 1024)
            return int(response.status)
        finally:
            connection.close()


def callback_message(job: Mapping[str, Any]) -> str:
    """The callback queue's message of a finished job."""
    return json.dumps({"version": "1", "job_id": job["job_id"], "tenant_id": job["tenant_id"]})


def queue_callback(
    store: JobStore, queue: MessageQueue, settings: Settings, job: Mapping[str, Any]
) -> bool:
    """Record the callback ``pending`` and enqueue its delivery; True when done (or none)."""
    if not job.get("callback_url") or (job.get("callback") or {}).get("state") in DONE_STATES:
        return True
    if not settings.callback_queue_url:
        logger.warning("no callback queue configured; callback not sent")
        return True
    try:
        store.record_callback(job["job_id"], {"state": "pending", "attempts": 0}, only_new=True)
        queue.send(
            settings.callback_queue_url,
            callback_message(job),
            {
                "job_id": job["job_id"],
                "tenant_id": job["tenant_id"],
                **correlation.attributes(job.get("correlation_id")),
            },
        )
    except Exception:
        logger.exception("enqueueing the callback failed", extra={"job_id": job["job_id"]})
        return False
    return True


class CallbackDelivery:
    """One delivery attempt of a job's callback (the callbacks function)."""

    def __init__(
        self,
        store: JobStore,
        queue: MessageQueue,
        sender: CallbackSender,
        *,
        settings: Settings,
        secrets: SecretSource | None = None,
        signing_keys: SigningKeys | None = None,
        resolver: Resolver = resolve,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.queue = queue
        self.sender = sender
        self.settings = settings
        self.secrets = secrets
        self.signing_keys = signing_keys
        self.resolver = resolver
        self.clock = clock

    @cached_property
    def _key(self) -> bytes | None:
        name = self.settings.callback_secret_name
        if not name or self.secrets is None:
            return None
        key = json.loads(self.secrets.secret_string(name)).get("key", "")
        if not key:
            raise ConfigurationError("the callback secret has no 'key'")
        return str(key).encode()

    def deliver(self, body: str, delivery: Delivery) -> str:
        """Attempt the delivery of one message; the state recorded.

        Raises :class:`CallbackFailed` for another attempt (after the backoff) and on
        the last one (recorded ``failed``; SQS then moves the message to the DLQ).
        """
        message = json.loads(body)
        job = self.store.get(str(message["job_id"]))
        cid = correlation.of_record(job)
        if cid:  # the callbacks function's log lines carry the job's id
            correlation.bind(cid)
        if job is None or job["tenant_id"] != message.get("tenant_id"):
            logger.warning("callback for a missing job dropped", extra={"job_id": message})
            return "missing"
        url = str(job.get("callback_url") or "")
        previous = job.get("callback") or {}
        if not url or previous.get("state") in DONE_STATES:
            return str(previous.get("state", "none"))
        attempts = max(delivery.receives, int(previous.get("attempts", 0)) + 1)
        status: dict[str, Any] = {"attempts": attempts, "last_status": None}
        try:
            dest = destination(
                url, allow_private=self.settings.callback_allow_private, resolver=self.resolver
            )
            event = Notifier.event(job)
            payload = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            raw = payload.encode()
            code = self.sender.post(
                dest, raw, self._headers(job, raw), self.settings.callback_timeout_s
            )
            status["last_status"] = code
            if not 200 <= code < 300:
                raise CallbackFailed(f"the receiver answered {code}")
        except CallbackRefused as refused:
            # A tenant must not make our functions call internal addresses (SSRF).
            status.update(state="refused", error=str(refused))
            self.store.record_callback(job["job_id"], status)
            logger.warning("callback refused", extra={"job_id": job["job_id"], "why": str(refused)})
            return "refused"
        except (CallbackFailed, OSError, http.client.HTTPException) as exc:
            last = delivery.receives >= self.settings.callback_max_receive_count
            status.update(state="failed" if last else "retrying", error=str(exc)[:500])
            self.store.record_callback(job["job_id"], status)
            logger.warning(
                "callback attempt failed",
                extra={"job_id": job["job_id"], "attempt": attempts, "error": str(exc)},
            )
            # The last attempt comes back at once: SQS moves it to the DLQ on that receive.
            self._back_off(delivery, last=last)
            raise CallbackFailed(str(exc)) from exc
        status.update(state="delivered", delivered_at=now_iso(self.clock))
        self.store.record_callback(job["job_id"], status)
        logger.info("callback delivered", extra={"job_id": job["job_id"], "attempt": attempts})
        return "delivered"

    def _headers(self, job: Mapping[str, Any], body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stratus-jobs/1",
            "X-Stratus-Event": f"job.{job['status']}",
            "X-Stratus-Job-Id": str(job["job_id"]),
            **correlation.headers(job.get("correlation_id")),
        }
        own = self.signing_keys.current(str(job["tenant_id"])) if self.signing_keys else None
        if own is not None:
            headers[SIGNATURE_HEADER] = sign(own.secret.encode(), int(self.clock()), body, own.kid)
        elif self._key is not None:  # the stack-wide fallback of tenants without their own
            headers[SIGNATURE_HEADER] = sign(self._key, int(self.clock()), body)
        return headers

    def _back_off(self, delivery: Delivery, *, last: bool) -> None:
        delay = 0
        if not last:
            delay = retry_delay_s(
                delivery.receives,
                base_s=self.settings.job_retry_base_s,
                cap_s=self.settings.job_retry_cap_s,
            )
        if not delivery.queue_url or not delivery.receipt_handle:
            return
        try:
            self.queue.change_visibility(delivery.queue_url, delivery.receipt_handle, delay)
        except Exception:
            logger.exception("changing the callback message visibility failed")

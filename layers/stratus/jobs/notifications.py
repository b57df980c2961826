"""Announcing finished jobs: an event on the jobs topic and a signed callback POST.

The callback goes only to a public address (:func:`public_destination`, checked
right before sending, unless ``allow_private``), never follows redirects, and is
signed with ``X-Stratus-Signature`` when a callback key is configured; receivers
check it with :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from stratus.errors import ConfigurationError
from stratus.jobs.contracts import Clock, view
from stratus.jobs.ports import CallbackSender, EventPublisher, Resolver, SecretSource
from stratus.observability import logger

SIGNATURE_HEADER = "X-Stratus-Signature"
CALLBACK_TIMEOUT_S = 5.0


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Stratus-Signature`` value: ``t=<unix ts>,v1=<hex HMAC-SHA256(key, "t.body")>``."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(key: bytes, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """Check a callback signature (what a receiver does); rejects stale timestamps."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, timestamp, body), header)


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (TCP); empty if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [str(info[4][0]) for info in infos]


def public_destination(url: str, resolver: Resolver = resolve) -> bool:
    """True if every address ``url``'s host resolves to is a public (global) one.

    Loopback, private, link-local (instance metadata), shared and reserved ranges
    are refused, and so is a host that does not resolve.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = {ipaddress.ip_address(a) for a in resolver(parts.hostname, port)}
    except ValueError:
        return False
    return bool(addresses) and all(address.is_global for address in addresses)


def callback_allowed(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> bool:
    """The callback destination check: an http(s) URL to a public address (or any, if allowed)."""
    if not url.startswith(("http://", "https://")):
        return False
    return allow_private or public_destination(url, resolver)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead a checked public URL to an internal address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibCallbackSender:
    """:class:`~stratus.jobs.ports.CallbackSender` over urllib; redirects are not followed."""

    def __init__(self) -> None:
        self.opener = urllib.request.build_opener(_RefuseRedirects)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> None:
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - scheme checked
        with self.opener.open(request, timeout=timeout_s) as response:
            response.read()


class Notifier:
    """Publishes a finished job's event and POSTs it to the job's callback URL."""

    def __init__(
        self,
        *,
        publisher: EventPublisher | None,
        callbacks: CallbackSender,
        secrets: SecretSource | None = None,
        callback_secret_name: str = "",
        allow_private: bool = False,
        resolver: Resolver = resolve,
        clock: Clock = time.time,
    ) -> None:
        self.publisher = publisher
        self.callbacks = callbacks
        self.secrets = secrets
        self.callback_secret_name = callback_secret_name
        self.allow_private = allow_private
        self.resolver = resolver
        self.clock = clock

    @cached_property
    def _key(self) -> bytes | None:
        if not self.callback_secret_name or self.secrets is None:
            return None
        raw = self.secrets.secret_string(self.callback_secret_name)
        key = json.loads(raw).get("key", "")
        if not key:
            raise ConfigurationError("the callback secret has no 'key'")
        return str(key).encode()

    @staticmethod
    def event(job: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "version": "1",
            "type": f"job.{job['status']}",
            "tenant_id": job["tenant_id"],
            "job": view(job).model_dump(mode="json"),
        }

    def job_finished(self, job: Mapping[str, Any]) -> bool:
        """Publish and call back; True if the event was published (or there is no topic).

        Failures are logged, never raised: the job is done either way.
        """
        event = self.event(job)
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        delivered = True
        if self.publisher is not None:
            try:
                self.publisher.publish(
                    body.decode(),
                    {"type": event["type"], "tenant_id": job["tenant_id"], "agent": job["agent"]},
                )
            except Exception:
                delivered = False
                logger.exception("publishing the job event failed", extra={"job_id": job["job_id"]})
        if job.get("callback_url"):
            self._callback(str(job["callback_url"]), job, body)
        return delivered

    def _callback(self, url: str, job: Mapping[str, Any], body: bytes) -> None:
        if not url.startswith(("http://", "https://")):
            return
        if not callback_allowed(url, allow_private=self.allow_private, resolver=self.resolver):
            # A tenant must not make our functions call internal addresses (SSRF).
            logger.warning(
                "callback refused: the URL resolves to a non-public address",
                extra={"job_id": job["job_id"]},
            )
            return
        try:
            key = self._key
        except Exception:
            logger.exception("the callback key could not be read", extra={"job_id": job["job_id"]})
            return
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stratus-jobs/1",
            "X-Stratus-Event": f"job.{job['status']}",
            "X-Stratus-Job-Id": str(job["job_id"]),
        }
        if key is not None:
            headers[SIGNATURE_HEADER] = sign(key, int(self.clock()), body)
        for attempt in (1, 2):
            try:
                self.callbacks.post(url, body, headers, CALLBACK_TIMEOUT_S)
                logger.info("callback delivered", extra={"job_id": job["job_id"]})
                return
            except (urllib.error.URLError, OSError) as exc:
                logger.warning(
                    "callback failed",
                    extra={"job_id": job["job_id"], "attempt": attempt, "error": str(exc)},
                )

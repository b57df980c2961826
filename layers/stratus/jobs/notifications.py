"""Announcing finished jobs: an event on the jobs topic; the callback signature.

Callbacks are delivered asynchronously (:mod:`stratus.jobs.callbacks`), only to
public addresses on ports 80/443 (:func:`public_destination` is the address
check), without redirects, signed with ``X-Stratus-Signature: t=<unix>,kid=<key
id>,v1=<hex>`` under the job's tenant's own key (:mod:`stratus.signing_keys`);
receivers check it with :func:`verify` and the tenant's active keys.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from stratus import correlation
from stratus.correlation import FIELD
from stratus.jobs.contracts import view
from stratus.jobs.ports import EventPublisher, Resolver
from stratus.observability import logger

SIGNATURE_HEADER = "X-Stratus-Signature"


def sign(key: bytes, timestamp: int, body: bytes, kid: str | None = None) -> str:
    """The ``X-Stratus-Signature`` value: ``t=<unix ts>,kid=<key id>,v1=<hex HMAC-SHA256(key,
    "t.body")>`` (without ``kid``: the stack-wide fallback key of tenants without their own)."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},kid={kid},v1={mac}" if kid else f"t={timestamp},v1={mac}"


def _fields(header: str) -> dict[str, str]:
    return dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)


def _check(
    key: bytes, header: str, body: bytes, kid: str | None, tolerance_s: int, now: float | None
) -> bool:
    fields = _fields(header)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, timestamp, body, kid), header.strip())


def verify(
    body: bytes,
    header: str,
    secrets: Mapping[str, bytes | str] | bytes,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """Check a callback signature (what a receiver does).

    ``secrets``: the tenant's active keys as ``{kid: secret}`` (both keys during a
    rollover). True only if the header's ``kid`` is one of them, the HMAC of
    ``"<t>." + body`` under that key matches, and ``t`` is within ``tolerance_s``
    seconds of now. Any other key id, a missing ``kid``, another tenant's keys, a
    changed body or an old timestamp: False.

    The form from before per-tenant keys, ``verify(key, header, body)`` (both bytes,
    a header without ``kid``: the stack-wide fallback key), still works.
    """
    if isinstance(secrets, (bytes, bytearray)):
        key, raw = bytes(body), bytes(secrets)
        return "kid" not in _fields(header) and _check(key, header, raw, None, tolerance_s, now)
    kid = _fields(header).get("kid", "")
    secret = secrets.get(kid) if kid else None
    if secret is None:
        return False
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    return _check(key, header, bytes(body), kid, tolerance_s, now)


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


class Notifier:
    """Publishes a finished job's event on the jobs topic (callbacks are queued apart)."""

    def __init__(self, *, publisher: EventPublisher | None) -> None:
        self.publisher = publisher

    @staticmethod
    def event(job: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "version": "1",
            "type": f"job.{job['status']}",
            "tenant_id": job["tenant_id"],
            "job": view(job).model_dump(mode="json"),
            **correlation.attributes(job.get(FIELD)),
        }

    def job_finished(self, job: Mapping[str, Any]) -> bool:
        """Publish the event; True if it was published (or there is no topic).

        Failures are logged, never raised: the job is done either way.
        """
        if self.publisher is None:
            return True
        event = self.event(job)
        body = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            ids = {"type": event["type"], "tenant_id": job["tenant_id"], "agent": job["agent"]}
            self.publisher.publish(body, {**ids, **correlation.attributes(job.get(FIELD))})
        except Exception:
            logger.exception("publishing the job event failed", extra={"job_id": job["job_id"]})
            return False
        return True

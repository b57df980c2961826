"""Callback delivery (issue 10): one resolution, the checked address, ports 80/443, no
redirects, retries with backoff, the status on the job. Real HTTP on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stratus.config import Settings
from stratus.jobs import JobRequest, verify
from stratus.jobs.callbacks import (
    CallbackDelivery,
    CallbackFailed,
    Destination,
    PinnedHttpSender,
    destination,
)
from stratus.jobs.memory import MemoryCallbacks, MemoryJobStore, MemoryQueue, MemorySecrets
from stratus.jobs.retries import Delivery

PUBLIC = "93.184.216.34"


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers ``status``."""

    def __init__(self, status: int = 204, location: str = "") -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.path, dict(self.headers.items()), body))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


class Rebinding:
    """First answer public, every later one 127.0.0.1 (a DNS rebinding attack)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [PUBLIC] if self.calls == 1 else ["127.0.0.1"]


def world(
    url: str, *, allow_private: bool = False, resolver: Any = None, sender: Any = None
) -> tuple[CallbackDelivery, MemoryJobStore, MemoryQueue, str]:
    store, queue = MemoryJobStore(), MemoryQueue()
    job, _ = store.create(
        job_id="job_1",
        tenant_id="t1",
        request=JobRequest(agent="triage", input="x", callback_url=url),
        source="api",
    )
    store.claim("job_1", lease_s=60)
    store.finish("job_1", "succeeded", result={"answer": "東京"})
    settings = Settings(
        callback_allow_private=allow_private,
        callback_secret_name="cb",
        callback_max_receive_count=3,
        callback_queue_url="https://sqs.test/callbacks",
    )
    delivery = CallbackDelivery(
        store,
        queue,
        sender if sender is not None else MemoryCallbacks(),
        settings=settings,
        secrets=MemorySecrets({"cb": json.dumps({"key": "k"})}),
        resolver=resolver or (lambda host, port: [PUBLIC]),
    )
    message = json.dumps({"version": "1", "job_id": job["job_id"], "tenant_id": "t1"})
    return delivery, store, queue, message


def attempt(n: int) -> Delivery:
    return Delivery("https://sqs.test/callbacks", f"receipt-{n}", n)


def status(store: MemoryJobStore) -> dict[str, Any]:
    job = store.get("job_1")
    assert job is not None
    return dict(job["callback"])


def test_a_rebinding_resolver_never_reaches_loopback() -> None:
    resolver, sender = Rebinding(), MemoryCallbacks()
    delivery, store, _, message = world(
        "https://hooks.example.com/hook", resolver=resolver, sender=sender
    )
    assert delivery.deliver(message, attempt(1)) == "delivered"
    ((dest, body, headers),) = sender.posted
    assert resolver.calls == 1  # resolved once; the connection goes to that answer
    assert dest == Destination("https", "hooks.example.com", 443, "/hook", PUBLIC)
    assert verify(b"k", headers["X-Stratus-Signature"], body)
    assert json.loads(body)["job"]["result"] == {"answer": "東京"}
    recorded = status(store)
    assert recorded["state"] == "delivered" and recorded["attempts"] == 1
    assert recorded["last_status"] == 204 and recorded["delivered_at"]


def test_the_sender_connects_to_the_checked_address_with_the_original_host(
    receiver: Receiver,
) -> None:
    # The host name would resolve elsewhere (or nowhere): only the pinned address counts.
    dest = Destination("http", "hooks.example.invalid", receiver.port, "/h?x=1", "127.0.0.1")
    assert PinnedHttpSender().post(dest, b"{}", {"X-Test": "1"}, 5.0) == 204
    ((path, headers, _),) = receiver.requests
    assert path == "/h?x=1"
    assert headers["Host"] == f"hooks.example.invalid:{receiver.port}"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com:8080/hook",
        "http://hooks.example.com:22/",
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_other_ports_and_non_public_addresses_are_refused(url: str) -> None:
    sender = MemoryCallbacks()
    resolver = (lambda host, port: [host]) if url[7].isdigit() else None
    delivery, store, queue, message = world(url, resolver=resolver, sender=sender)
    assert delivery.deliver(message, attempt(1)) == "refused"
    assert sender.posted == [] and queue.visibility == []
    assert status(store)["state"] == "refused"
    assert delivery.deliver(message, attempt(2)) == "refused"  # never retried


def test_the_local_cloud_allows_loopback_and_any_port(receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}/hook"
    delivery, _, _, message = world(
        url, allow_private=True, resolver=lambda h, p: ["127.0.0.1"], sender=PinnedHttpSender()
    )
    assert delivery.deliver(message, attempt(1)) == "delivered"
    assert len(receiver.requests) == 1
    assert destination(url, allow_private=True, resolver=lambda h, p: ["127.0.0.1"]).port == (
        receiver.port
    )


def test_a_redirect_is_a_failed_attempt_never_followed() -> None:
    target = Receiver()
    redirect = Receiver(302, location=f"http://127.0.0.1:{target.port}/internal")
    try:
        url = f"http://127.0.0.1:{redirect.port}/hook"
        delivery, store, queue, message = world(
            url, allow_private=True, resolver=lambda h, p: ["127.0.0.1"], sender=PinnedHttpSender()
        )
        with pytest.raises(CallbackFailed):
            delivery.deliver(message, attempt(1))
        assert len(redirect.requests) == 1 and target.requests == []
        recorded = status(store)
        assert recorded["state"] == "retrying" and recorded["last_status"] == 302
        assert [v[1] for v in queue.visibility] == ["receipt-1"]  # back after the backoff
    finally:
        target.close()
        redirect.close()


def test_retries_with_backoff_then_failed_on_the_last_attempt() -> None:
    sender = MemoryCallbacks(statuses=[500, ConnectionRefusedError("refused"), 503])
    delivery, store, queue, message = world("https://hooks.example.com/x", sender=sender)
    for n in (1, 2):
        with pytest.raises(CallbackFailed):
            delivery.deliver(message, attempt(n))
        assert status(store)["state"] == "retrying" and status(store)["attempts"] == n
    with pytest.raises(CallbackFailed):  # the last: recorded failed, then the DLQ
        delivery.deliver(message, attempt(3))
    recorded = status(store)
    assert recorded["state"] == "failed" and recorded["attempts"] == 3
    assert recorded["last_status"] == 503 and recorded.get("delivered_at") is None
    delays = [v[2] for v in queue.visibility]
    # 5-10 s, 10-20 s, then 0: the last attempt goes to the DLQ on the next receive.
    assert len(delays) == 3 and 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20
    assert delays[2] == 0
    assert delivery.deliver(message, attempt(4)) == "failed"  # a late duplicate: no post
    assert len(sender.posted) == 3


def test_finishing_or_cancelling_a_job_queues_its_callback_and_posts_nothing() -> None:
    from tests.unit.test_job_lifecycle import CALLBACK_QUEUE, Runner, run
    from tests.unit.test_job_lifecycle import world as make_world

    w = make_world.__wrapped__()  # type: ignore[attr-defined]
    job = w.claim(w.submit(callback_url="https://hooks.example.com/x"))
    assert job is not None
    run(w, job, Runner())
    cancelled = w.submit(callback_url="https://hooks.example.com/y")
    view = w.service.cancel(cancelled["job_id"], "t1")
    assert view.callback is not None and view.callback.state == "pending"
    queued = [(url, json.loads(body)) for url, body, _ in w.queue.sent if url == CALLBACK_QUEUE]
    assert [body["job_id"] for _, body in queued] == [job["job_id"], cancelled["job_id"]]
    done = w.store.get(job["job_id"])
    assert done is not None and done["callback"] == {"state": "pending", "attempts": 0}
    assert done["notified"] is True
    # A notification caught up (its first try failed) queues it again: the delivery
    # skips a callback already delivered, so a duplicate message is harmless.
    w.store.record_callback(job["job_id"], {"state": "delivered", "attempts": 1})
    w.service.ensure_notified({**(w.store.get(job["job_id"]) or {}), "notified": False})
    assert len([u for u, _, _ in w.queue.sent if u == CALLBACK_QUEUE]) == 2

"""Per-tenant callback signing keys (issue 14): verify with the tenant's active keys, a
rollover with two keys, another tenant's keys refused, bad kid, old timestamp, and
the secret kept out of logs, job records and events."""

from __future__ import annotations

import json
import logging
import time

import pytest

from stratus.config import Settings
from stratus.jobs import JobRequest, sign, verify
from stratus.jobs.callbacks import CallbackDelivery
from stratus.jobs.memory import MemoryCallbacks, MemoryJobStore, MemoryQueue, MemorySecrets
from stratus.jobs.retries import Delivery
from stratus.signing_keys import MemorySigningKeyStore, SigningKeys

PUBLIC = "93.184.216.34"
BODY = b'{"type":"job.succeeded","tenant_id":"A"}'


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys(clock: Clock | None = None) -> SigningKeys:
    return SigningKeys(MemorySigningKeyStore(), clock=clock or Clock())


def header_for(secret: str, kid: str, now: float, body: bytes = BODY) -> str:
    return sign(secret.encode(), int(now), body, kid)


# -- verify ----------------------------------------------------------------------------------


def test_verify_accepts_the_tenants_key_and_refuses_another_tenants() -> None:
    clock = Clock()
    directory = keys(clock)
    a, b = directory.create_for("A"), directory.create_for("B")
    header = header_for(a.secret, a.kid, clock.now)
    assert header.startswith(f"t={int(clock.now)},kid={a.kid},v1=")
    assert verify(BODY, header, directory.secrets_for("A"), now=clock.now)
    # Tenant B's receiver, with B's keys, cannot verify a callback meant for A ...
    assert not verify(BODY, header, directory.secrets_for("B"), now=clock.now)
    # ... nor forge one for A with its own secret under A's kid.
    forged = header_for(b.secret, a.kid, clock.now)
    assert not verify(BODY, forged, directory.secrets_for("A"), now=clock.now)


def test_either_key_verifies_during_a_rollover_and_only_the_new_one_after() -> None:
    clock = Clock()
    directory = keys(clock)
    old = directory.create_for("A")
    clock.now += 10
    new, previous = directory.rotate("A", grace_s=3600)
    assert [p.kid for p in previous] == [old.kid]
    assert previous[0].valid_until == clock.now + 3600
    assert directory.current("A") == new  # the newest key signs
    during = directory.secrets_for("A")
    assert set(during) == {old.kid, new.kid}
    assert verify(BODY, header_for(old.secret, old.kid, clock.now), during, now=clock.now)
    assert verify(BODY, header_for(new.secret, new.kid, clock.now), during, now=clock.now)

    clock.now += 3600  # the grace is over: the old key no longer verifies
    after = directory.secrets_for("A")
    assert set(after) == {new.kid}
    assert not verify(BODY, header_for(old.secret, old.kid, clock.now), after, now=clock.now)
    assert verify(BODY, header_for(new.secret, new.kid, clock.now), after, now=clock.now)


def test_a_rotation_without_grace_retires_the_old_key_at_once() -> None:
    clock = Clock()
    directory = keys(clock)
    old = directory.create_for("A")
    new, _ = directory.rotate("A", grace_s=0)
    assert set(directory.secrets_for("A")) == {new.kid}
    assert not verify(
        BODY, header_for(old.secret, old.kid, clock.now), directory.secrets_for("A"), now=clock.now
    )
    with pytest.raises(ValueError):
        directory.rotate("A", grace_s=-1)


def test_a_tenant_without_keys_gets_its_first_on_rotate() -> None:
    directory = keys()
    assert directory.current("legacy") is None
    key, previous = directory.rotate("legacy")
    assert previous == [] and directory.current("legacy") == key


def test_bad_kid_old_timestamp_changed_body_and_malformed_headers_are_refused() -> None:
    clock = Clock()
    directory = keys(clock)
    a = directory.create_for("A")
    secrets = directory.secrets_for("A")
    good = header_for(a.secret, a.kid, clock.now)
    assert verify(BODY, good, secrets, now=clock.now)
    assert not verify(BODY, good.replace(a.kid, "cbk_000000000000"), secrets, now=clock.now)
    assert not verify(BODY + b" ", good, secrets, now=clock.now)
    # An old timestamp (beyond the 300 s tolerance), and one from the future.
    assert not verify(BODY, good, secrets, now=clock.now + 301)
    assert not verify(BODY, good, secrets, now=clock.now - 301)
    assert verify(BODY, good, secrets, now=clock.now + 299)
    # Without kid (the fallback form) against the tenant's keys: refused.
    no_kid = sign(a.secret.encode(), int(clock.now), BODY)
    assert not verify(BODY, no_kid, secrets, now=clock.now)
    for header in ("", "garbage", f"kid={a.kid},v1=00", f"t=x,kid={a.kid},v1=00"):
        assert not verify(BODY, header, secrets, now=clock.now)


def test_the_form_from_before_per_tenant_keys_still_verifies() -> None:
    fresh = sign(b"k", int(time.time()), BODY)
    assert verify(b"k", fresh, BODY) and not verify(b"other", fresh, BODY)
    assert not verify(b"k", sign(b"k", int(time.time()), BODY, "kid1"), BODY)


def test_the_secret_is_not_in_a_keys_repr() -> None:
    key = keys().create_for("A")
    assert key.secret not in repr(key) and key.secret not in str(key.public())


# -- delivery ----------------------------------------------------------------------------------


def delivery_world(
    directory: SigningKeys, tenant: str, clock: Clock
) -> tuple[CallbackDelivery, MemoryJobStore, MemoryCallbacks, str]:
    store, sender = MemoryJobStore(), MemoryCallbacks()
    store.create(
        job_id="job_1",
        tenant_id=tenant,
        request=JobRequest(agent="triage", input="x", callback_url="https://hooks.example.com/h"),
        source="api",
    )
    store.claim("job_1", lease_s=60)
    store.finish("job_1", "succeeded", result={"answer": "ok"})
    settings = Settings(
        callback_secret_name="cb",
        callback_keys_table="callback-keys",
        callback_queue_url="https://sqs.test/callbacks",
    )
    delivery = CallbackDelivery(
        store,
        MemoryQueue(),
        sender,
        settings=settings,
        secrets=MemorySecrets({"cb": json.dumps({"key": "stack-wide"})}),
        signing_keys=directory,
        resolver=lambda host, port: [PUBLIC],
        clock=clock,
    )
    message = json.dumps({"version": "1", "job_id": "job_1", "tenant_id": tenant})
    return delivery, store, sender, message


def test_a_callback_is_signed_with_its_tenants_newest_key_and_the_secret_never_leaks(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stratus")  # the suite runs it at WARNING
    clock = Clock(time.time())
    directory = keys(clock)
    a, b = directory.create_for("A"), directory.create_for("B")
    delivery, store, sender, message = delivery_world(directory, "A", clock)
    assert delivery.deliver(message, Delivery("https://sqs.test/callbacks", "r1", 1)) == (
        "delivered"
    )
    ((_, body, headers),) = sender.posted
    header = headers["X-Stratus-Signature"]
    assert f"kid={a.kid}," in header
    assert verify(body, header, directory.secrets_for("A"), now=clock.now)
    assert not verify(body, header, directory.secrets_for("B"), now=clock.now)
    # Nowhere: not in the body (the event), the job record, or anything logged.
    job = store.get("job_1")
    captured = capsys.readouterr()
    everything = "\n".join(
        [body.decode(), json.dumps(job, default=str), captured.out, captured.err, caplog.text]
    )
    for secret in (a.secret, b.secret, "stack-wide"):
        assert secret not in everything
    assert "callback delivered" in captured.out + caplog.text  # the logs were captured


def test_a_tenant_without_its_own_key_falls_back_to_the_stack_wide_key() -> None:
    clock = Clock(time.time())
    directory = keys(clock)
    directory.create_for("B")
    delivery, _, sender, message = delivery_world(directory, "old-tenant", clock)
    delivery.deliver(message, Delivery("https://sqs.test/callbacks", "r1", 1))
    ((_, body, headers),) = sender.posted
    header = headers["X-Stratus-Signature"]
    assert "kid=" not in header
    assert verify(b"stack-wide", header, body)
    # After its first rotation (the migration) it is signed with its own key.
    own, _ = directory.rotate("old-tenant")
    delivery, _, sender, message = delivery_world(directory, "old-tenant", clock)
    delivery.deliver(message, Delivery("https://sqs.test/callbacks", "r1", 1))
    ((_, body, headers),) = sender.posted
    assert f"kid={own.kid}," in headers["X-Stratus-Signature"]
    assert verify(body, headers["X-Stratus-Signature"], directory.secrets_for("old-tenant"))

"""POST /v1/callback-keys/rotate against moto, in-process (issue 14): scope admin, the new
secret once, both keys verify during the grace, audited without the secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from stratus import composition
from stratus.aws import AwsClients
from stratus.composition import Runtime
from stratus.config import Settings
from stratus.jobs import sign, verify
from stratus.signing_keys import DynamoSigningKeyStore, SigningKeys
from tests.support import api_event, call

BODY = b'{"type":"job.succeeded"}'


@pytest.fixture
def platform(cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("STRATUS_AGENT", "")
    composition.install(Runtime(Settings()))
    from functions.handlers import api

    yield {"handler": api.lambda_handler, **cloud}
    composition.reset()


def rotate(platform: dict[str, Any], body: Any = None, **kwargs: Any) -> Any:
    event = api_event(None, path="/v1/callback-keys/rotate", body=body, **kwargs)
    event["resource"] = "/v1/callback-keys/rotate"
    return call(platform["handler"], event)


def keys_of(platform: dict[str, Any]) -> SigningKeys:
    table = AwsClients().table(platform["tables"]["callback_keys"])
    return SigningKeys(DynamoSigningKeyStore(table))


def test_rotation_returns_the_secret_once_and_both_keys_verify_during_the_grace(
    platform: dict[str, Any],
) -> None:
    first = rotate(platform)
    assert first.status == 201, first.body
    assert first.body["kid"].startswith("cbk_") and first.body["previous"] == []
    second = rotate(platform, {"grace_s": 600})
    assert second.status == 201, second.body
    (previous,) = second.body["previous"]
    assert previous["kid"] == first.body["kid"]
    assert previous["valid_until"] == pytest.approx(time.time() + 600, abs=60)

    directory = keys_of(platform)
    assert directory.current("tenant-a").kid == second.body["kid"]  # type: ignore[union-attr]
    secrets = directory.secrets_for("tenant-a")
    now = int(time.time())
    for answer in (first.body, second.body):
        header = sign(answer["secret"].encode(), now, BODY, answer["kid"])
        assert verify(BODY, header, secrets)
        # Another tenant's receiver (its own keys) cannot verify it.
        assert not verify(BODY, header, directory.secrets_for("tenant-b"))
    # Another tenant's rotation touches only its own keys.
    assert rotate(platform, tenant_id="tenant-b").status == 201
    assert set(directory.secrets_for("tenant-a")) == set(secrets)

    # Audited (key ids only, never a secret), in the caller's tenant.
    items = boto3.client("dynamodb").scan(TableName=platform["tables"]["audit"])["Items"]
    rotated = [i for i in items if i.get("type", {}).get("S") == "callback_key.rotated"]
    assert len(rotated) == 3
    dumped = json.dumps(items)
    assert second.body["kid"] in dumped
    for answer in (first.body, second.body):
        assert answer["secret"] not in dumped


def test_rotation_needs_admin_and_a_valid_grace(platform: dict[str, Any]) -> None:
    event = api_event(None, path="/v1/callback-keys/rotate", body={})
    event["resource"] = "/v1/callback-keys/rotate"
    event["requestContext"]["authorizer"]["scopes"] = "invoke jobs"
    refused = call(platform["handler"], event)
    assert refused.status == 403
    assert refused.body["error"]["details"]["missing_scope"] == "admin"
    bad_bodies: list[Any] = [
        {"grace_s": -1},
        {"grace_s": 31 * 86400},
        {"grace_s": "60"},
        {"other": 1},
        [None, None],
        5,
    ]
    for bad in bad_bodies:
        answer = rotate(platform, bad)
        assert answer.status == 422, (bad, answer.body)
        assert answer.body["error"]["code"] == "validation_error"
    assert keys_of(platform).active("tenant-a") == []


def test_a_delivery_reads_the_tenants_keys_in_one_round_trip(platform: dict[str, Any]) -> None:
    from bench.roundtrips import recording
    from stratus.jobs import JobRequest
    from stratus.jobs.callbacks import CallbackDelivery
    from stratus.jobs.memory import MemoryCallbacks, MemoryQueue
    from stratus.jobs.retries import Delivery

    runtime = composition.current()
    rotate(platform)
    rotate(platform, {"grace_s": 60})  # two active keys: still one Query
    store = runtime.job_store
    store.create(
        job_id="job_rt",
        tenant_id="tenant-a",
        request=JobRequest(agent="triage", input="x", callback_url="https://hooks.example.com/h"),
        source="api",
    )
    store.claim("job_rt", lease_s=60)
    store.finish("job_rt", "succeeded", result={"answer": "ok"})
    sender = MemoryCallbacks()
    delivery = CallbackDelivery(
        store,
        MemoryQueue(),
        sender,
        settings=runtime.settings,
        signing_keys=runtime.signing_keys,
        resolver=lambda host, port: ["93.184.216.34"],
    )
    message = json.dumps({"version": "1", "job_id": "job_rt", "tenant_id": "tenant-a"})
    with recording() as trace:
        assert delivery.deliver(message, Delivery("", "", 1)) == "delivered"
    keys_calls = trace.of("dynamodb", platform["tables"]["callback_keys"])
    assert [c.operation for c in keys_calls] == ["Query"]
    ((_, body, headers),) = sender.posted
    current = runtime.signing_keys.current("tenant-a")
    assert current is not None and f"kid={current.kid}," in headers["X-Stratus-Signature"]
    assert verify(
        body, headers["X-Stratus-Signature"], runtime.signing_keys.secrets_for("tenant-a")
    )

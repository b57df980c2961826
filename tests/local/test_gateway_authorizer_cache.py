"""The local gateway's authorizer cache: a decision is reused for the window, then re-asked.

A settable clock drives the window, so the test never waits: within it a key the
authorizer now refuses (revoked, suspended) still passes on the cached Allow, as on API
Gateway; after it the authorizer runs again and the request gets a 401.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.gateway import AUTHORIZER_CACHE_TTL_S, LocalApiGateway, authorizer_cache_ttl
from infra.local.lambda_types import InvokeResult
from infra.topology import api_routes

ALLOW = {
    "principalId": "tenant-a",
    "policyDocument": {"Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke"}]},
    "context": {"tenant_id": "tenant-a"},
}


class Runtime:
    def __init__(self) -> None:
        self.allow = True
        self.authorizer_calls = 0

    def __call__(self, name: str, event: Any) -> InvokeResult:
        if name == "auth":
            self.authorizer_calls += 1
            if self.allow:
                return InvokeResult("r", ALLOW, None, 1.0, False)
            return InvokeResult("r", None, {"errorMessage": "Unauthorized"}, 1.0, False)
        payload = {"statusCode": 200, "headers": {}, "body": json.dumps({"ok": True})}
        return InvokeResult("r", payload, None, 1.0, False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def runtime() -> Runtime:
    return Runtime()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway(runtime: Runtime, clock: Clock) -> Iterator[LocalApiGateway]:
    server = LocalApiGateway(
        api_routes(["triage"]),
        {"platform": "platform", "agent:triage": "triage"},
        runtime,
        authorizer="auth",
        authorizer_cache_s=5,
        clock=clock,
    ).start()
    yield server
    server.stop()


def status(gateway: LocalApiGateway, key: str = "sk-a") -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{gateway.port}/v1/usage", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_a_refused_key_passes_on_the_cached_decision_until_the_window_ends(
    gateway: LocalApiGateway, runtime: Runtime, clock: Clock
) -> None:
    assert status(gateway) == 200
    runtime.allow = False  # revoked
    clock.now += 4.9
    assert status(gateway) == 200 and runtime.authorizer_calls == 1
    clock.now += 0.1
    assert status(gateway) == 401 and runtime.authorizer_calls == 2
    assert status(gateway, "sk-b") == 401  # per key: another key is asked for at once


def test_the_window_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert authorizer_cache_ttl({}) == AUTHORIZER_CACHE_TTL_S == 60
    assert authorizer_cache_ttl({"STRATUS_LOCAL_AUTHORIZER_CACHE_S": "1.5"}) == 1.5
    for bad in ("soon", "-1", "7200"):
        with pytest.raises(ValueError, match="STRATUS_LOCAL_AUTHORIZER_CACHE_S"):
            authorizer_cache_ttl({"STRATUS_LOCAL_AUTHORIZER_CACHE_S": bad})
    monkeypatch.setenv("STRATUS_LOCAL_AUTHORIZER_CACHE_S", "0")
    server = LocalApiGateway(api_routes([]), {}, Runtime(), authorizer="auth")
    assert server.authorizer_cache_s == 0
    server.stop()

"""The loopback endpoint that answers the init phase's priming calls
(``stratus.priming_model``), driven by a real HTTP client and by raw sockets."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx2

from stratus import priming_model
from stratus.priming_model import PrimingModel


def _echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"seen": request}


def test_it_answers_each_request_on_one_keep_alive_connection() -> None:
    with PrimingModel(_echo) as endpoint, httpx2.Client() as http:
        first = http.post(f"{endpoint.base_url}/chat/completions", json={"n": 1})
        second = http.post(f"{endpoint.base_url}/chat/completions", json={"n": 2})
    assert first.status_code == second.status_code == 200
    assert [first.json(), second.json()] == [{"seen": {"n": 1}}, {"seen": {"n": 2}}]
    assert endpoint.answered == 2
    assert not endpoint._thread.is_alive()


def test_a_body_split_over_several_packets_is_read_whole() -> None:
    body = json.dumps({"text": "x" * 200_000}).encode()
    with (
        PrimingModel(lambda request: {"length": len(request["text"])}) as endpoint,
        socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as conn,
    ):
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 50_000):
            conn.sendall(body[start : start + 50_000])
        reply = b""
        while not reply.endswith(b"}"):
            reply += conn.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {"length": 200_000}


def test_a_client_that_goes_away_or_never_comes_ends_the_endpoint() -> None:
    with PrimingModel(_echo) as endpoint:
        socket.create_connection(("127.0.0.1", endpoint.port), timeout=5).close()
        endpoint._thread.join(5)
        assert not endpoint._thread.is_alive()
    assert endpoint.answered == 0
    started = time.monotonic()
    with PrimingModel(_echo) as idle:
        pass  # nobody connects: leaving the block wakes and ends the thread at once
    assert not idle._thread.is_alive()
    assert time.monotonic() - started < priming_model.TIMEOUT_S  # not its accept timeout


def test_leaving_while_the_client_holds_its_connection_open_does_not_wait() -> None:
    started = time.monotonic()
    with (
        PrimingModel(_echo) as endpoint,
        socket.create_connection(("127.0.0.1", endpoint.port), timeout=5),
    ):
        while endpoint._conn is None and time.monotonic() - started < 5:
            time.sleep(0.01)  # until the endpoint accepted it
    assert not endpoint._thread.is_alive()
    assert time.monotonic() - started < priming_model.TIMEOUT_S


def test_an_oversized_request_is_refused_not_read(monkeypatch: Any) -> None:
    monkeypatch.setattr(priming_model, "MAX_REQUEST_BYTES", 1024)
    with (
        PrimingModel(_echo) as endpoint,
        socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as conn,
    ):
        conn.sendall(b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n")
        assert conn.recv(100) == b""  # closed without an answer
    assert endpoint.answered == 0

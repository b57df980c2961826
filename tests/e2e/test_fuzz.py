"""The local cloud as a fuzzer and a careless client see it: every request answered.

One local cloud (offline fake model) for the module. Real HTTP throughout:

* a burst of concurrent messages to one ``enqueue`` session: each gets a response
  with a documented status, none is dropped;
* raw-socket edges (an undeclared method, a body over 10 MB, a chunked one);
* schemathesis (its CLI, ``st run``) over the served OpenAPI document with the
  coverage, fuzzing and stateful phases: zero 5xx, zero response-schema
  violations, zero transport errors, at least 1,000 generated cases.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infra.local.cloud import LocalCloud
from infra.local.demo import HttpReply, http

pytestmark = pytest.mark.xdist_group("local-cloud")  # one moto server per process at a time

#: Generated cases the run must reach, and examples per operation (model routes get fewer).
MIN_CASES = 1000
MAX_EXAMPLES = 60
MODEL_ROUTE_EXAMPLES = 12
#: Failures of these kinds must be zero whatever else is found.
HARD_FAILURES = {"ServerError", "JsonSchemaError", "MalformedJson"}


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


def _auth(cloud: LocalCloud) -> dict[str, str]:
    assert cloud.facts is not None
    return {"Authorization": f"Bearer {cloud.facts.demo_tenant_key}"}


# --- a burst on one enqueue session ------------------------------------------------------------


def test_twenty_concurrent_messages_to_one_enqueue_session_are_all_answered(
    cloud: LocalCloud,
) -> None:
    facts = cloud.facts
    assert facts is not None
    base = f"{facts.api_url}/v1/agents/support/sessions"
    created = http("POST", base, {}, _auth(cloud))
    assert created.status == 201, created.body
    url = f"{base}/{created.body['session_id']}/messages"
    replies: list[HttpReply | BaseException | None] = [None] * 20

    def send(index: int) -> None:
        try:
            replies[index] = http("POST", url, {"message": f"message {index}"}, _auth(cloud))
        except BaseException as error:  # a reset or a timeout: the failure this test is about
            replies[index] = error

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    dropped = [r for r in replies if not isinstance(r, HttpReply)]
    assert dropped == [], dropped
    answered = [r for r in replies if isinstance(r, HttpReply)]
    documented = {200: None, 409: "session_busy", 429: "throttled"}
    for reply in answered:
        assert reply.status in documented, (reply.status, reply.body)
        if reply.status != 200:
            assert reply.body["error"]["code"] == documented[reply.status], reply.body
        if reply.status == 429:
            assert int(reply.headers["Retry-After"]) >= 1
    assert any(r.status == 200 for r in answered)


# --- raw HTTP edges ------------------------------------------------------------------------------


def _raw(cloud: LocalCloud, head: bytes, body_blocks: int = 0) -> tuple[int, dict[str, Any]]:
    assert cloud.facts is not None
    port = int(cloud.facts.api_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        block = b"x" * (1024 * 1024)
        for _ in range(body_blocks):
            sock.sendall(block)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, "connection closed before a response"
            data += more
        head_text, _, rest = data.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in head_text.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        while len(rest) < length:
            rest += sock.recv(65536)
    return int(head_text.split()[1]), json.loads(rest)


def test_trace_is_the_json_404_api_gateway_answers(cloud: LocalCloud) -> None:
    status, body = _raw(cloud, b"TRACE /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_a_body_over_10_mb_gets_the_413_not_a_reset(cloud: LocalCloud) -> None:
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {11 * 1024 * 1024}\r\n\r\n".encode()
    )
    status, body = _raw(cloud, head, body_blocks=11)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


# --- schemathesis ------------------------------------------------------------------------------


def _fuzz_document(cloud: LocalCloud) -> dict[str, Any]:
    """The served document, with ``{agent}`` limited to the deployed agents (so cases reach
    them; other names are the platform's 404, which the coverage phase still sends)."""
    assert cloud.facts is not None
    served = http("GET", f"{cloud.facts.api_url}/v1/openapi.json")
    assert served.status == 200
    doc: dict[str, Any] = served.body
    agents = sorted(cloud.specs)
    for item in doc["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "agent":
                    parameter["schema"] = {"type": "string", "enum": agents}
    return doc


CONFIG = f"""
[generation]
max-examples = {MAX_EXAMPLES}

# Every check, but one: ``unsupported_method`` wants 405, and a REST API answers an
# undeclared method with its MISSING_AUTHENTICATION_TOKEN response (404 not_found in
# this stack), as the local gateway does.
[checks]
unsupported_method.enabled = false

[[operations]]
include-path-regex = "^/v1/agents/[^/]+/(invoke|sessions/[^/]+/messages)$"
generation.max-examples = {MODEL_ROUTE_EXAMPLES}

# A schema-valid job body can still be refused by what no schema can say: an agent name of
# the right shape that this stack does not have (404 agent_not_found), an input over the
# agent's own limit (413 input_too_large), a callback host that does not resolve.
[[operations]]
include-path = "/v1/jobs"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

# ``since`` has the shape of an ISO 8601 time (its pattern), and a string of that shape can
# still be no date (month 13): 422 validation_error, which no pattern can say.
[[operations]]
include-path = "/v1/audit"
include-method = "GET"
checks.positive_data_acceptance.enabled = false
"""


def test_schemathesis_finds_no_5xx_no_schema_violation_no_transport_error(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    facts = cloud.facts
    assert facts is not None
    (tmp_path / "openapi.json").write_text(json.dumps(_fuzz_document(cloud)), encoding="utf-8")
    (tmp_path / "schemathesis.toml").write_text(CONFIG, encoding="utf-8")
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        str(tmp_path / "openapi.json"),
        "--url",
        facts.api_url,
        "--header",
        f"Authorization: Bearer {facts.demo_tenant_key}",
        "--phases",
        "coverage,fuzzing,stateful",
        "--continue-on-failure",
        "--seed",
        "10",
        # One worker: CPython 3.11 compiles regexes in threads unsafely ("AST constructor
        # recursion depth mismatch"); the local cloud has two cores anyway.
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--request-retries",
        "0",  # a reset must fail the run, not be retried away
        "--report",
        "json,junit",
        "--report-json-path",
        str(report),
        "--report-junit-path",
        str(tmp_path / "junit.xml"),
        "--no-color",
    ]
    started = time.monotonic()
    env = dict(os.environ)
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    output = run.stdout[-20000:] + run.stderr[-5000:]
    assert report.exists(), output
    result = json.loads(report.read_text(encoding="utf-8"))
    cases = result["test_cases"]["generated"]
    print(f"schemathesis: {cases} generated cases in {elapsed:.0f} s")
    failures = {f["type"]: f for f in result["failures"]}
    assert not HARD_FAILURES & set(failures), output  # 5xx, response-schema violations
    assert result["errors"] == [], output  # transport errors: resets, timeouts
    assert result["test_cases"]["errored"] == 0, output
    assert failures == {}, output
    assert run.returncode == 0, output
    assert cases >= MIN_CASES, output
    phases = result["phases"]
    assert {name: phases[name]["status"] for name in ("coverage", "fuzzing", "stateful")} == {
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }, output

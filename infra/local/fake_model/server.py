"""``FakeModelServer``: the fake model's controls, request handling and entry point."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from infra.local.fake_model.completion import (
    REPLIES,
    CompletionEngine,
    Reply,
    chunks,
    completion_json,
)
from infra.local.fake_model.embeddings import EMBEDDINGS_PATH, handle_embeddings
from infra.local.fake_model.faults import FAULTS, Fault, FaultSlot
from infra.local.fake_model.httpd import FakeHandler, FakeHTTPServer
from infra.local.fake_model.markers import BANNER, CHAT_PATH, MODELS, MODELS_PATH
from infra.local.fake_model.validation import BadRequest, validate_chat_body

logger = logging.getLogger("stratus.fake_model")

_MAX_RECORDED = 10_000  # keeps a long-running demo from growing without bound
#: A fixed streaming token rate: milliseconds between two streamed chunks (default 0).
STREAM_DELAY_ENV = "STRATUS_FAKE_MODEL_STREAM_DELAY_MS"


@dataclass
class RecordedRequest:
    """One request the server received (admin ``/_fake/*`` calls are not recorded).

    It is recorded as soon as it arrives, with ``status=None`` until it is
    answered, so that a request still held by a delay fault (whose client may
    already have timed out) is counted straight away. A client that gave up
    during a delay fault is recorded as ``499`` (nginx's "client closed request").
    """

    method: str
    path: str
    model: str | None
    api_key: str | None
    body: Any
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form served by ``GET /_fake/requests``."""
        return {
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "api_key": self.api_key,
            "status": self.status,
            "body": self.body,
        }


#: Structured outputs of Stratus's own side calls (memory fact extraction, the guardrail
#: classifier, output moderation): the fake answers them by its default behaviour, never
#: with a scripted reply that does not name their schema, so a script describes the
#: conversation, whatever a policy adds around it.
BOOKKEEPING_SCHEMAS = frozenset({"Facts", "InputVerdict", "OutputVerdict"})
NO_FACTS = Reply(content=json.dumps({"facts": []}))


def _schema_name(body: dict[str, Any]) -> str | None:
    """The name of a request's structured-output schema (None: plain text)."""
    response_format = body.get("response_format")
    schema = response_format.get("json_schema") if isinstance(response_format, dict) else None
    name = schema.get("name") if isinstance(schema, dict) else None
    return name if isinstance(name, str) else None


class FakeModelServer:
    """An OpenAI-compatible chat completions server that answers offline.

    Use it as a context manager (or ``start()``/``stop()``) and point the
    ``openai`` client at :attr:`url`::

        with FakeModelServer() as server:
            client = openai.OpenAI(api_key="test", base_url=server.url)
            client.chat.completions.create(model="gpt-5-mini", messages=[...])

    Shared state (faults, scripted replies, recorded requests, the prompt
    cache) is guarded by one lock because requests run on their own threads.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = False,
        stream_delay_ms: float | None = None,
    ) -> None:
        self.host = host
        #: Pause between two chunks of a streamed answer (``STREAM_DELAY_ENV``; settable).
        self.stream_delay_ms = (
            float(os.environ.get(STREAM_DELAY_ENV) or 0)
            if stream_delay_ms is None
            else stream_delay_ms
        )
        self._requested_port = port
        self.quiet = quiet
        self._lock = threading.Lock()
        self._faults: list[FaultSlot] = []
        self._replies: deque[Reply] = deque()
        self._recorded: deque[RecordedRequest] = deque(maxlen=_MAX_RECORDED)
        self._engine = CompletionEngine(self._lock)
        self._httpd: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle

    def start(self) -> FakeModelServer:
        """Bind and serve on a daemon thread; ``port=0`` picks a free port."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = FakeHTTPServer((self.host, self._requested_port), self)
        self._httpd = httpd
        # A short poll interval keeps stop() fast (shutdown waits for one poll).
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-model-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.log(
            logging.DEBUG if self.quiet else logging.WARNING, "%s Listening on %s", BANNER, self.url
        )
        return self

    def _hold_like_stream(self, completion: Any) -> None:
        """A whole answer takes as long as its stream would (``stream_delay_ms``)."""
        if self.stream_delay_ms > 0:
            count = sum(1 for _ in chunks(completion, False))
            self._stopping.wait(max(0, count - 1) * self.stream_delay_ms / 1000)

    def _paced(self, events: Any) -> Any:
        """The events with ``stream_delay_ms`` between two of them (a fixed token rate)."""
        for index, event in enumerate(events):
            if index and self.stream_delay_ms > 0:
                self._stopping.wait(self.stream_delay_ms / 1000)
            yield event

    def stop(self) -> None:
        """Stop serving, close the socket and open connections; safe to call twice."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes requests held by delay faults
        httpd.shutdown()
        httpd.close_connections(timeout=5.0)
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        self._httpd = None
        self._thread = None
        logger.debug("fake model server on %s:%s stopped", self.host, httpd.server_address[1])

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the requested one before ``start`` if it was not 0)."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        if self._requested_port:
            return self._requested_port
        raise RuntimeError("the fake model server is not started (port 0 is chosen on start)")

    @property
    def url(self) -> str:
        """The ``base_url`` for the ``openai`` client, e.g. ``http://127.0.0.1:8787/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # -- controls

    def inject(self, *faults: Fault) -> None:
        """Add faults; each request takes the first matching one that is not used up."""
        with self._lock:
            self._faults.extend(FaultSlot(fault) for fault in faults)

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order before the default behaviour."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forget faults, scripted replies, recorded requests and the prompt cache."""
        with self._lock:
            self._faults.clear()
            self._replies.clear()
            self._recorded.clear()
            self._engine.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, oldest first."""
        with self._lock:
            return [replace(request) for request in self._recorded]

    def call_count(
        self,
        *,
        model: str | None = None,
        api_key: str | None = None,
        path: str = CHAT_PATH,
    ) -> int:
        """Requests that reached ``path`` (faulted and rejected ones included)."""
        with self._lock:
            return sum(
                1
                for request in self._recorded
                if request.path == path
                and (model is None or request.model == model)
                and (api_key is None or request.api_key == api_key)
            )

    # -- request handling (called on handler threads)

    def _record(self, request: RecordedRequest) -> RecordedRequest:
        with self._lock:
            self._recorded.append(request)
        return request

    def _settle(self, request: RecordedRequest, status: int) -> int:
        """Record the status *before* the answer goes out.

        A client may look at ``requests`` as soon as it has its response, so the
        status must already be there by then.
        """
        with self._lock:
            request.status = status
        return status

    @staticmethod
    def _log_request(request: RecordedRequest) -> None:
        key = request.api_key
        masked = None if key is None else ("..." + key[-4:] if len(key) > 8 else "***")
        logger.debug(
            "%s %s model=%s key=%s -> %s",
            request.method,
            request.path,
            request.model,
            masked,
            request.status,
        )

    def _take_fault(self, model: str | None, api_key: str | None) -> Fault | None:
        with self._lock:
            for slot in self._faults:
                if slot.remaining != 0 and slot.fault.matches(model, api_key):
                    if slot.remaining > 0:
                        slot.remaining -= 1
                    return slot.fault
            return None

    def _take_reply(self, body: dict[str, Any]) -> Reply | None:
        """The first scripted reply meant for this request (see ``Reply.schema_name``)."""
        name = _schema_name(body)
        with self._lock:
            for reply in self._replies:
                if reply.schema_name == name or (
                    reply.schema_name is None and name not in BOOKKEEPING_SCHEMAS
                ):
                    self._replies.remove(reply)
                    return reply
            return None

    def handle(self, http: FakeHandler, method: str, path: str, raw: bytes) -> None:
        """Answer one request (called on the HTTP layer's handler threads)."""
        if path.startswith("/_fake/"):
            self._handle_admin(http, method, path, raw)
            return
        if path == CHAT_PATH and method == "POST":
            self._handle_chat(http, raw)
            return
        if path == EMBEDDINGS_PATH and method == "POST":
            handle_embeddings(self, http, raw, RecordedRequest)
            return
        record = self._record(RecordedRequest(method, path, None, http.api_key(), None))
        try:
            if path == MODELS_PATH and method == "GET":
                if record.api_key is None:
                    self._settle(record, 401)
                    self._send_unauthorized(http)
                    return
                data = [
                    {
                        "id": model,
                        "object": "model",
                        "created": 1_700_000_000,
                        "owned_by": "stratus-fake",
                    }
                    for model in MODELS
                ]
                http.send_json(self._settle(record, 200), {"object": "list", "data": data})
            elif path in (CHAT_PATH, MODELS_PATH, EMBEDDINGS_PATH):
                self._settle(record, 405)
                http.send_error_json(405, f"Method {method} is not allowed on {path}.")
            else:
                self._settle(record, 404)
                http.send_error_json(404, f"Invalid URL ({method} {path})", code="unknown_url")
        finally:
            self._log_request(record)

    @staticmethod
    def _send_unauthorized(http: FakeHandler) -> None:
        http.send_error_json(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )

    def _handle_chat(self, http: FakeHandler, raw: bytes) -> None:
        api_key = http.api_key()
        body: Any = None
        problem: BadRequest | None = None
        try:
            body = json.loads(raw) if raw.strip() else None
            if body is None:
                problem = BadRequest("We could not parse the JSON body of your request: empty.")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problem = BadRequest(f"We could not parse the JSON body of your request: {error}.")
        model = body.get("model") if isinstance(body, dict) else None
        record = self._record(
            RecordedRequest(
                "POST", CHAT_PATH, model if isinstance(model, str) else None, api_key, body
            )
        )
        try:
            if api_key is None:
                self._settle(record, 401)
                self._send_unauthorized(http)
                return
            if problem is None:
                try:
                    body = validate_chat_body(body)
                except BadRequest as error:
                    problem = error
            if problem is not None:
                self._settle(record, 400)
                http.send_error_json(400, problem.message, param=problem.param)
                return
            # Validation comes before faults so a malformed request never uses one up.
            fault = self._take_fault(record.model, api_key)
            if fault is not None:
                if fault.delay_s:
                    self._stopping.wait(fault.delay_s)
                    if http.client_gone():
                        # Like nginx's 499: the client timed out and left. Answering
                        # anyway would use up a scripted reply meant for a later call.
                        self._settle(record, 499)
                        http.close_connection = True
                        return
                if fault.status != 200:
                    self._settle(record, fault.status)
                    self._send_fault(http, fault)
                    return
            reply = self._take_reply(body)
            if reply is None and _schema_name(body) == "Facts":
                # Offline there is no understanding to extract facts with: it says none, so
                # a demo's or a test's turns never store invented "facts" as memories.
                reply = NO_FACTS
            completion = self._engine.complete(body, api_key, reply)
            headers = {"x-request-id": "req_" + completion.id.removeprefix("chatcmpl-")}
            self._settle(record, 200)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                http.send_stream(self._paced(chunks(completion, include_usage)), headers)
            else:
                self._hold_like_stream(completion)  # the same token rate, all at once
                http.send_json(200, completion_json(completion), headers)
        except OSError:
            raise  # the client hung up; nothing left to answer
        except Exception:
            # A bug here must surface as a 500 in the tests, not as a dropped connection.
            logger.exception("fake model server failed to answer a chat completion")
            if record.status is None:
                self._settle(record, 500)
                http.send_error_json(500, "The fake model server failed (see its log).")
            else:
                http.close_connection = True  # a response was already under way
        finally:
            if record.status is None:
                self._settle(record, 500)
            self._log_request(record)

    @staticmethod
    def _send_fault(http: FakeHandler, fault: Fault) -> None:
        headers = {}
        if fault.retry_after is not None:
            seconds = fault.retry_after
            headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        error_type, code = {
            429: ("requests", "rate_limit_exceeded"),
            401: ("invalid_request_error", "invalid_api_key"),
        }.get(fault.status, (None, None))
        http.send_error_json(
            fault.status, fault.message, error_type=error_type, code=code, headers=headers
        )

    def _handle_admin(self, http: FakeHandler, method: str, path: str, raw: bytes) -> None:
        """``/_fake/*``: the Python controls, for a server in another process."""
        routes = {
            "/_fake/faults": "POST",
            "/_fake/replies": "POST",
            "/_fake/reset": "POST",
            "/_fake/requests": "GET",
            "/_fake/health": "GET",
        }
        if path not in routes:
            http.send_error_json(404, f"Invalid URL ({method} {path})", code="unknown_url")
            return
        if routes[path] != method:
            http.send_error_json(405, f"Use {routes[path]} for {path}.")
            return
        if path == "/_fake/health":
            http.send_json(
                200, {"status": "ok", "fake_model": True, "banner": BANNER, "url": self.url}
            )
        elif path == "/_fake/requests":
            http.send_json(200, [request.to_json() for request in self.requests])
        elif path == "/_fake/reset":
            self.reset()
            http.send_json(200, {"ok": True})
        else:
            try:
                data = json.loads(raw) if raw.strip() else None
                if path == "/_fake/faults":
                    parsed_faults = FAULTS.validate_python(data)
                    faults = parsed_faults if isinstance(parsed_faults, list) else [parsed_faults]
                    self.inject(*faults)
                    count = len(faults)
                else:
                    parsed_replies = REPLIES.validate_python(data)
                    replies = (
                        parsed_replies if isinstance(parsed_replies, list) else [parsed_replies]
                    )
                    self.script(*replies)
                    count = len(replies)
            except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as error:
                http.send_error_json(400, str(error))
                return
            http.send_json(200, {"ok": True, "count": count})


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.fake_model",
        description="Offline OpenAI-compatible fake model server (not a real model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--log-level", default="WARNING", help="e.g. DEBUG to log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = FakeModelServer(args.host, args.port, quiet=True).start()
    print(BANNER, file=sys.stderr, flush=True)
    print(
        f"Fake model server listening; use base_url={server.url} (Ctrl-C to stop)", file=sys.stderr
    )
    print(server.url, flush=True)  # alone on stdout, for a parent process to read
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One local Lambda execution environment: import a handler once, then serve invocations.

Started by :class:`infra.local.lambda_runtime.LambdaRuntime` as
``python -u -m infra.local.lambda_worker --request-fd R --response-fd W`` with the
function's environment. It behaves like the Python runtime interface client
that AWS runs in every sandbox:

* **Init** imports ``$_HANDLER`` once (the cold start), then runs the hooks the
  handler registered with ``snapshot_restore_py.register_before_snapshot``
  (priming), both counted in ``init_ms``. Import failures are
  reported with Lambda's error types (``Runtime.ImportModuleError``,
  ``Runtime.UserCodeSyntaxError``, ``Runtime.HandlerNotFound``,
  ``Runtime.BeforeSnapshotError`` ...) and the
  worker exits, so the runtime starts afresh next time, as Lambda re-inits.
* **Invoke** calls the handler with the event and a Lambda context whose
  ``get_remaining_time_in_millis()`` counts down to the deadline the runtime
  sent. One invocation at a time; module globals survive between them (warm).
* **Errors** come back in Lambda's shape (``errorType``, ``errorMessage``,
  ``stackTrace``, ``requestId``) and are logged like Lambda logs them.

The protocol uses two dedicated pipes, never stdout: handlers print whatever
they like. Each message is one line of JSON (``json.dumps`` never emits a raw
newline). Runtime -> worker: ``{"type": "invoke", "request_id", "deadline_ms",
"invoked_function_arn", "event"}``. Worker -> runtime: first ``{"type": "ready",
"init_ms"}`` or ``{"type": "init_error", "error"}``, then one ``{"type":
"result", "request_id", "payload"}`` or ``{"type": "error", "request_id",
"error"}`` per invocation. EOF on the request pipe means "shut down".

Only the standard library is imported here: whatever this module imports would
be pre-loaded into the handler's process and distort its cold start.
"""

from __future__ import annotations

import argparse
import decimal
import importlib
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

Handler = Callable[[Any, Any], Any]

#: The request id of the invocation in progress, for the Lambda-style log handler.
_current_request_id = ""


class _Fault(Exception):
    """A failure Lambda reports with its own ``Runtime.*`` error type."""

    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace or []


class CognitoIdentity:
    """``context.identity``: set only for Mobile SDK callers, so its fields are None here."""

    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class LambdaContext:
    """The context object the Python runtime passes to handlers, attribute for attribute.

    As in AWS, ``memory_limit_in_mb`` and ``function_version`` are strings read
    from the environment, ``identity`` is an object with empty fields and
    ``client_context`` is None (no Mobile SDK client).
    """

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str) -> None:
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id: str | None = None
        self.client_context: Any = None
        self.identity = CognitoIdentity()
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the runtime kills this invocation (never negative)."""
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, msg: str) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"function_name={self.function_name},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _current_request_id
        return True


#: The line a worker writes to stdout and stderr once its init is done (never shown).
INIT_DONE = "\x00stratus-init-done"


def _setup_logging() -> None:
    """Install the root handler the Lambda Python runtime installs (text format).

    Code that logs through the standard library behaves as in AWS (root level
    WARNING unless ``AWS_LAMBDA_LOG_LEVEL`` says otherwise), and Powertools sees
    a pre-existing root handler and de-duplicates its own records, as in AWS.
    """
    logging.Formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stdout)
    handler.terminator = ""
    handler.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    if level in logging.getLevelNamesMapping():
        root.setLevel(level)


def _trace(tb: Any) -> list[str]:
    """The traceback as Lambda formats it, without this module's own frames."""
    frames = traceback.extract_tb(tb)
    here = os.path.abspath(__file__)
    while frames and os.path.abspath(frames[0].filename) == here:
        frames = traceback.StackSummary.from_list(frames[1:])
    return traceback.format_list(frames)


def _error(error_type: str, message: str, trace: list[str], request_id: str = "") -> dict[str, Any]:
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": trace,
    }


def _log_error(error: dict[str, Any]) -> None:
    """Log an unhandled error the way the Lambda runtime does: ``[ERROR] Type: message``."""
    head = f"[ERROR] {error['errorType']}"
    lines = [f"{head}: {error['errorMessage']}" if error["errorMessage"] else head]
    if error["stackTrace"]:
        lines.append("Traceback (most recent call last):")
        for element in error["stackTrace"]:
            lines.extend(element.rstrip("\n").splitlines())
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def load_handler(spec: str) -> Handler:
    """Import ``module.function`` like the Lambda bootstrap, with its error types."""
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError as exc:
        raise _Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}': {exc}") from exc
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise _Fault(
            "Runtime.BuiltInModuleConflict",
            f"Cannot use built-in module {module_name} as a handler module",
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise _Fault(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise _Fault(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_name}': {exc}",
            trace,
        ) from exc
    handler = getattr(module, function_name, None)
    if handler is None:
        raise _Fault(
            "Runtime.HandlerNotFound",
            f"Handler '{function_name}' missing on module '{module_name}'",
        )
    return handler


def run_init_hooks() -> None:
    """Run the hooks the handler registered with ``snapshot_restore_py.register_before_snapshot``.

    Lambda runs them after the handler's import, in the init phase, before it takes a
    SnapStart snapshot; here every init runs them (there is no snapshot to restore, so
    the after-restore hooks never run). ``snapshot_restore_py`` is only looked up in
    ``sys.modules``: a handler that never imported it registered nothing, and this
    module imports nothing into the handler's process. A hook that raises fails the
    init with ``Runtime.BeforeSnapshotError``.
    """
    hooks_module = sys.modules.get("snapshot_restore_py")
    if hooks_module is None:
        return
    for entry in list(hooks_module.get_before_snapshot()):
        func, args, kwargs = entry if isinstance(entry, tuple) else (entry, (), {})
        try:
            func(*args, **kwargs)
        except Exception as exc:
            raise _Fault(
                "Runtime.BeforeSnapshotError",
                f"before-snapshot hook {getattr(func, '__qualname__', func)!r} failed: {exc}",
                _trace(exc.__traceback__),
            ) from exc


def _default(obj: Any) -> Any:
    """Encode what Lambda's marshaller encodes beyond plain JSON: ``Decimal`` (DynamoDB)."""
    if isinstance(obj, decimal.Decimal):
        if obj.is_nan():
            return math.nan
        exponent = obj.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(obj)
        return float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _invoke(handler: Handler, message: dict[str, Any]) -> str:
    """Run one invocation and return the response line (without newline)."""
    global _current_request_id
    request_id = str(message["request_id"])
    _current_request_id = request_id
    context = LambdaContext(
        request_id, int(message["deadline_ms"]), str(message["invoked_function_arn"])
    )
    try:
        result = handler(message["event"], context)
    except Exception as exc:
        error = _error(type(exc).__name__, str(exc), _trace(exc.__traceback__), request_id)
        _log_error(error)
        return json.dumps({"type": "error", "request_id": request_id, "error": error})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        return json.dumps(
            {"type": "result", "request_id": request_id, "payload": result}, default=_default
        )
    except Exception as exc:  # TypeError, ValueError (circular), RecursionError
        error = _error("Runtime.MarshalError", f"Unable to marshal response: {exc}", [], request_id)
        _log_error(error)
        return json.dumps({"type": "error", "request_id": request_id, "error": error})


def _send(stream: BinaryIO, line: str) -> None:
    stream.write(line.encode("utf-8") + b"\n")
    stream.flush()


def _watch_parent(parent_pid: int) -> None:
    """Exit when the runtime's process is gone, even if a handler is stuck."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Init, then serve invocations until the request pipe closes."""
    parser = argparse.ArgumentParser(prog="python -m infra.local.lambda_worker")
    parser.add_argument("--request-fd", type=int, required=True)
    parser.add_argument("--response-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    # Keep the protocol pipes out of anything the handler spawns.
    os.set_inheritable(args.request_fd, False)
    os.set_inheritable(args.response_fd, False)
    requests = os.fdopen(args.request_fd, "rb")
    responses = os.fdopen(args.response_fd, "wb")
    threading.Thread(
        target=_watch_parent, args=(args.parent_pid,), name="parent-watch", daemon=True
    ).start()

    _setup_logging()
    started = time.perf_counter()
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
        run_init_hooks()  # part of init, as in Lambda: counted in init_ms
    except _Fault as fault:
        error = _error(fault.error_type, fault.message, fault.trace)
    except Exception as exc:  # the module raised while importing
        error = _error(type(exc).__name__, str(exc), _trace(exc.__traceback__))
    else:
        init_ms = (time.perf_counter() - started) * 1000.0
        # Everything written before these markers is init output: the runtime's log readers
        # tag what follows with the request id, never what came before.
        for stream in (sys.stdout, sys.stderr):
            stream.write(INIT_DONE + "\n")
            stream.flush()
        _send(responses, json.dumps({"type": "ready", "init_ms": init_ms}))
        while line := requests.readline():
            _send(responses, _invoke(handler, json.loads(line)))
        return 0
    _log_error(error)
    _send(responses, json.dumps({"type": "init_error", "error": error}))
    return 1


if __name__ == "__main__":
    sys.exit(main())

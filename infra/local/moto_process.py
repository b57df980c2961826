"""moto's server in a process of its own, for the local cloud.

moto answers every AWS request the local cloud makes except Lambda Invoke, and
it is pure Python: in the local cloud's process it shared one interpreter lock
with the API gateway, the SQS pollers and the fake model, and under load that
process, not the functions, set the pace (a 1,000-job soak ran at ~0.6 jobs/s
with the function workers idle). In a process of its own it has a core to itself.

``python -m infra.local.moto_process --lambda-port P --parent-pid PID`` starts
the threaded server on a free loopback port with :mod:`infra.local.moto_atomic`
installed, prints ``ready <port>`` on stdout, and serves until it is terminated
or its parent is gone. :class:`MotoProcess` is the parent's side.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY = "ready"
START_TIMEOUT_S = 60.0


class MotoProcess:
    """Start, wait for and stop the moto server process."""

    def __init__(self, *, lambda_port: int, cwd: Path, env: dict[str, str] | None = None) -> None:
        self._lambda_port = lambda_port
        self._cwd = cwd
        self._env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoProcess:
        env = dict(self._env)
        # moto's Step Functions interpreter calls Lambda at localhost:$MOTO_PORT.
        env["MOTO_PORT"] = str(self._lambda_port)
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-u",
                "-m",
                "infra.local.moto_process",
                "--parent-pid",
                str(os.getpid()),
            ],
            cwd=self._cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.port = self._wait_ready(self._proc)
        return self

    @staticmethod
    def _wait_ready(proc: subprocess.Popen[bytes]) -> int:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        buffer = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 256)
                if not chunk:
                    break
                buffer += chunk
                if b"\n" in buffer:
                    word, _, port = buffer.split(b"\n", 1)[0].decode().partition(" ")
                    if word == READY and port.isdigit():
                        return int(port)
                    break
            elif proc.poll() is not None:
                break
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise RuntimeError(f"moto's server did not start (exit status {proc.poll()})")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.moto_process")
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    from infra.local import moto_atomic

    # DynamoDB makes each request atomic; moto's threaded server does not.
    moto_atomic.install()
    from infra.local import moto_sender

    moto_sender.install()  # SenderId = the sending request's access key id, as SQS reports
    from infra.local import moto_vectors

    moto_vectors.install()  # S3 Vectors QueryVectors (moto stores vectors, cannot query)
    from infra.local import moto_appconfig

    moto_appconfig.install()  # AppConfigData (feature flags) from moto's hosted versions
    # One line per request is noise (and costs time under load); errors still show.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopped.set())
    threading.Thread(
        target=_watch_parent, args=(args.parent_pid,), name="parent-watch", daemon=True
    ).start()
    _, port = server.get_host_and_port()
    print(f"{READY} {port}", flush=True)
    while not stopped.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

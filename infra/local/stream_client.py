"""A small streaming client (issue 17): a ticket, one WebSocket, the frames as they come.

Against the local cloud (its ``.stratus/local.json``) or any stage (``--api-url`` and
``--ws-url``: the stack's ``ApiUrl`` and ``WebSocketUrl`` outputs)::

    .venv/bin/python -m infra.local.stream_client --agent triage --input "Where is A-1001?"
    .venv/bin/python -m infra.local.stream_client --agent support --new-session \\
        --message "Hi, where is my order A-1001?"

The tenant key only goes to ``POST /v1/stream-tickets`` (a header); the WebSocket URL
carries the single-use ticket, so keys never sit in URLs or access logs. Deltas are
printed as they arrive, then the ``done`` (or ``error``) frame as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from websockets.asyncio.client import connect

from infra.paths import REPO_ROOT

STATE_FILE = REPO_ROOT / ".stratus" / "local.json"


def _post(url: str, key: str, body: Any) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the API URL the user gave
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def ticket(api_url: str, key: str) -> str:
    """A single-use, 60 s ticket for ``?ticket=`` (``POST /v1/stream-tickets``)."""
    return str(_post(f"{api_url}/v1/stream-tickets", key, {})["ticket"])


def new_session(api_url: str, key: str, agent: str) -> str:
    return str(_post(f"{api_url}/v1/agents/{agent}/sessions", key, {"metadata": {}})["session_id"])


async def stream(
    websocket_url: str,
    frame: dict[str, Any],
    *,
    ticket: str | None = None,
    key: str | None = None,
    on_frame: Callable[[dict[str, Any]], None] | None = None,
    timeout_s: float = 120.0,
) -> list[dict[str, Any]]:
    """Send one frame; every frame of its client id up to ``done`` or ``error``."""
    url = f"{websocket_url}?ticket={ticket}" if ticket else websocket_url
    headers = {"Authorization": f"Bearer {key}"} if key and not ticket else None
    frames: list[dict[str, Any]] = []
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps(frame))
        while True:
            answer = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
            if answer.get("id") not in (frame.get("id"), None):
                continue
            frames.append(answer)
            if on_frame is not None:
                on_frame(answer)
            if answer.get("type") in ("done", "error"):
                return frames


def printer(out: TextIO) -> Callable[[dict[str, Any]], None]:
    """Deltas inline as they come, tool calls on their own line, the final frame as JSON."""

    def show(frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "delta":
            out.write(str(frame.get("text", "")))
        elif kind == "tool":
            out.write(f"\n[tool {frame.get('name')}: {frame.get('status')}]\n")
        else:
            out.write("\n" + json.dumps(frame, indent=2) + "\n")
        out.flush()

    return show


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.stream_client", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--api-url", help="REST API base URL (default: the local cloud's)")
    parser.add_argument("--ws-url", help="WebSocket URL (default: the local cloud's)")
    parser.add_argument("--key", help="tenant API key (default: the local demo tenant's)")
    parser.add_argument("--agent", required=True)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", help="invoke the agent with this input")
    what.add_argument("--message", help="a session turn with this message")
    parser.add_argument("--session-id", help="the session of --message")
    parser.add_argument("--new-session", action="store_true", help="create one for --message")
    parser.add_argument("--id", help="the client id (default: a new one; resend to replay)")
    parser.add_argument("--state-file", type=Path, default=STATE_FILE)
    return parser


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    local: dict[str, Any] = {}
    if not (args.api_url and args.ws_url and args.key) and args.state_file.exists():
        local = json.loads(args.state_file.read_text(encoding="utf-8"))
    api_url = args.api_url or local.get("api_url")
    ws_url = args.ws_url or local.get("websocket_url")
    key = args.key or local.get("demo_tenant_key")
    if not (api_url and ws_url and key):
        print("no local cloud running: pass --api-url, --ws-url and --key", file=sys.stderr)
        return 2
    client_id = args.id or f"cli-{uuid.uuid4().hex[:12]}"
    frame: dict[str, Any] = {"action": "invoke", "id": client_id, "agent": args.agent}
    if args.input is not None:
        frame["input"] = args.input
    else:
        session_id = args.session_id or (
            new_session(api_url, key, args.agent) if args.new_session else None
        )
        if not session_id:
            print("--message needs --session-id or --new-session", file=sys.stderr)
            return 2
        frame.update(action="message", session_id=session_id, message=args.message)
    frames = asyncio.run(stream(ws_url, frame, ticket=ticket(api_url, key), on_frame=printer(out)))
    return 0 if frames and frames[-1].get("type") == "done" else 1


if __name__ == "__main__":
    raise SystemExit(main())

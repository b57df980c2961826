"""``stratus audit`` without an API: clear exit codes, never a traceback."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from infra import audit_cli


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="stratus")
    audit_cli.add_parser(parser.add_subparsers(dest="command"))
    return audit_cli.main(parser.parse_args(["audit", *argv]), out=io.StringIO())


def test_no_local_cloud_and_no_api_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--facts", str(tmp_path / "missing.json")) == 2
    assert "no local cloud is running" in capsys.readouterr().err


def test_a_bad_limit_or_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--limit", "0", "--api", "http://127.0.0.1:9", "--key", "k") == 2
    assert run("--api", "ftp://example", "--key", "k") == 2
    assert "--api must be an http(s) URL" in capsys.readouterr().err


def test_events_print_one_line_each() -> None:
    out = io.StringIO()
    audit_cli.print_events(
        [
            {
                "at": "2026-12-01T00:00:00.000+00:00",
                "type": "tool.denied",
                "actor": "key_1",
                "details": {"tool": "lookup_order"},
            }
        ],
        out,
    )
    line = out.getvalue().strip()
    assert line.startswith("2026-12-01T00:00:00.000+00:00  tool.denied")
    assert '{"tool":"lookup_order"}' in line
    empty = io.StringIO()
    audit_cli.print_events([], empty)
    assert empty.getvalue() == "no audit events\n"

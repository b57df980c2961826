"""``stratus dev --console-port`` and ``stratus cost`` are registered; the banner and the
state file name the console."""

from __future__ import annotations

import io
import json

from infra import cli
from infra.local.facts import DEFAULT_CONSOLE_PORT, LocalFacts, print_banner


def _facts(**extra: str) -> LocalFacts:
    return LocalFacts(
        api_url="http://127.0.0.1:8780",
        aws_endpoint_url="http://127.0.0.1:8781",
        region="us-east-1",
        demo_tenant_key="sk-stratus-x",
        demo_tenant_id="t",
        model_base_url="http://127.0.0.1:9/v1",
        fake_model=True,
        tables={},
        queue_urls={},
        state_machine_arns={},
        functions={},
        **extra,
    )


def test_dev_takes_a_console_port() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["dev"]).console_port == DEFAULT_CONSOLE_PORT == 8783
    assert parser.parse_args(["dev", "--console-port", "0"]).console_port == 0


def test_cost_options() -> None:
    args = cli.build_parser().parse_args(["cost"])
    assert (args.days, args.tenant, args.json, args.stack, args.table) == (
        7,
        None,
        False,
        None,
        None,
    )
    args = cli.build_parser().parse_args(
        ["cost", "--stack", "Stratus-dev", "--days", "30", "--tenant", "t1", "--json"]
    )
    assert (args.stack, args.days, args.tenant, args.json) == ("Stratus-dev", 30, "t1", True)


def test_banner_and_state_name_the_console() -> None:
    facts = _facts(console_url="http://127.0.0.1:8783")
    out = io.StringIO()
    print_banner(facts, out)
    assert "Console:           http://127.0.0.1:8783" in out.getvalue()
    assert json.loads(facts.to_json())["console_url"] == "http://127.0.0.1:8783"
    quiet = io.StringIO()
    print_banner(_facts(), quiet)
    assert "Console:" not in quiet.getvalue()

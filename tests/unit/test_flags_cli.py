"""``stratus flags`` (issue 19): list, get and set against a local cloud's profile (moto's
server with the AppConfigData shim, provisioned as the local cloud does), the per-tenant
rollout rule, refusals of documents the schema rejects, and the deployed path (a new
version, then a deployment with the stack's strategy) on fakes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra import flags_cli
from infra.cli import build_parser
from infra.config import load_stage
from infra.local import moto_appconfig
from infra.local.provision import LocalClients, create_flags
from infra.topology.flags import default_document


@pytest.fixture(scope="module")
def facts_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    moto_appconfig.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    flags = create_flags(LocalClients(endpoint), load_stage("dev"))
    path = tmp_path_factory.mktemp("flags") / "local.json"
    path.write_text(
        json.dumps({"aws_endpoint_url": endpoint, "region": "us-east-1", "flags": flags}),
        encoding="utf-8",
    )
    yield path
    server.stop()
    moto_appconfig.uninstall()


PARSER = build_parser()
SESSION = boto3.session.Session(
    aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
)


def _run(facts: Path, *argv: str) -> tuple[int, str, str]:
    args = PARSER.parse_args(["flags", *argv, "--state-file", str(facts)])
    out, err = io.StringIO(), io.StringIO()
    try:
        code = flags_cli.run(args, out=out, session=SESSION)
    except flags_cli.FlagsError as error:
        err.write(str(error))
        code = 2
    return code, out.getvalue(), err.getvalue()


def _document(facts: Path) -> dict[str, Any]:
    code, out, _ = _run(facts, "list", "--json")
    assert code == 0
    document: dict[str, Any] = json.loads(out)
    return document


def test_list_and_get_show_the_default_document(facts_file: Path) -> None:
    code, out, _ = _run(facts_file, "list")
    assert code == 0
    assert {line.split(":")[0] for line in out.splitlines()} >= set(default_document())
    code, out, _ = _run(facts_file, "get", "agent_disabled")
    assert code == 0 and json.loads(out)["default"] is False
    assert _run(facts_file, "get", "no_such_flag")[0] == 2


def test_a_kill_switch_rule_then_removed(facts_file: Path) -> None:
    code, out, _ = _run(
        facts_file,
        "set",
        "agent_disabled",
        "--rule",
        "triage off",
        "--when",
        "true",
        "--condition",
        "agent=EQUALS:triage",
    )
    assert code == 0 and "written" in out
    rule = _document(facts_file)["agent_disabled"]["rules"]["triage off"]
    assert rule == {
        "when_match": True,
        "conditions": [{"action": "EQUALS", "key": "agent", "value": "triage"}],
    }
    assert _run(facts_file, "set", "agent_disabled", "--remove-rule", "triage off")[0] == 0
    assert "rules" not in _document(facts_file)["agent_disabled"]


def test_a_percentage_rollout_is_a_modulo_range_on_the_tenant_hash(facts_file: Path) -> None:
    code, _, err = _run(
        facts_file,
        "set",
        "model_tier",
        "--rollout",
        "20",
        "--value",
        "fast",
        "--condition",
        "agent=EQUALS:support",
    )
    assert code == 0, err
    rules = _document(facts_file)["model_tier"]["rules"]
    assert rules["rollout 20%"] == {
        "when_match": "fast",
        "conditions": [
            {"action": "EQUALS", "key": "agent", "value": "support"},
            {
                "action": "MODULO_RANGE",
                "key": "tenant_hash",
                "value": {"BASE": 100, "START": 0, "END": 19},
            },
        ],
    }
    assert _run(facts_file, "set", "model_tier", "--rules", "{}", "--remove-rule", "x")[0] == 2
    assert _run(facts_file, "set", "model_tier", "--rollout", "0", "--value", "fast")[0] == 2


def test_documents_the_schema_refuses_are_not_written(facts_file: Path, tmp_path: Path) -> None:
    before = _document(facts_file)
    code, _, err = _run(facts_file, "set", "model_tier", "--default", "turbo")
    assert code == 2 and "does not validate" in err and "model_tier" in err
    code, _, err = _run(facts_file, "set", "agent_disabled", "--default", '"yes"')
    assert code == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agent_disabled": {"default": None}}), encoding="utf-8")
    assert _run(facts_file, "set-all", "--file", str(bad))[0] == 2
    assert _run(facts_file, "set", "brand_new", "--when", "x")[0] == 2  # no --default
    assert _document(facts_file) == before

    good = tmp_path / "good.json"
    good.write_text(json.dumps(before), encoding="utf-8")
    assert _run(facts_file, "set-all", "--file", str(good))[0] == 0


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data


class _FakeAws:
    """cloudformation + appconfig, as much as ``stratus flags --stack`` uses."""

    def __init__(self) -> None:
        self.versions: dict[int, bytes] = {1: json.dumps(default_document()).encode()}
        self.deployments: list[dict[str, Any]] = []

    def client(self, service: str) -> Any:
        return self

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        outputs = {
            "FlagsApplication": "app1",
            "FlagsEnvironment": "env1",
            "FlagsProfile": "prof1",
            "FlagsDeploymentStrategyId": "strat1",
        }
        return {
            "Stacks": [
                {"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}
            ]
        }

    def get_paginator(self, name: str) -> Any:
        assert name == "list_hosted_configuration_versions"
        fake = self

        class Pages:
            def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
                return [{"Items": [{"VersionNumber": v} for v in fake.versions]}]

        return Pages()

    def get_hosted_configuration_version(self, **kwargs: Any) -> dict[str, Any]:
        return {"Content": _Body(self.versions[kwargs["VersionNumber"]])}

    def create_hosted_configuration_version(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["LatestVersionNumber"] == max(self.versions)  # no lost update
        number = max(self.versions) + 1
        self.versions[number] = kwargs["Content"]
        return {"VersionNumber": number}

    def start_deployment(self, **kwargs: Any) -> dict[str, Any]:
        self.deployments.append(kwargs)
        return {"DeploymentNumber": len(self.deployments), "State": "DEPLOYING"}


def test_a_deployed_stack_gets_a_version_and_a_deployment() -> None:
    fake = _FakeAws()
    args = build_parser().parse_args(
        ["flags", "set", "agent_disabled", "--default", "true", "--stack", "Stratus-prod"]
    )
    out = io.StringIO()
    assert flags_cli.run(args, out=out, session=fake) == 0
    assert json.loads(fake.versions[2])["agent_disabled"]["default"] is True
    (deployment,) = fake.deployments
    assert deployment == {
        "ApplicationId": "app1",
        "EnvironmentId": "env1",
        "DeploymentStrategyId": "strat1",
        "ConfigurationProfileId": "prof1",
        "ConfigurationVersion": "2",
        "Description": "stratus flags set agent_disabled",
    }
    assert "deployment 1" in out.getvalue()

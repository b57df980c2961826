"""``stratus releases``: what changed between two releases (git refs, paths, the working
tree), and what a stack's ``live`` aliases serve (moto's Lambda and CloudFormation)."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.agents import load_agent
from infra import releases_cli
from infra.paths import REPO_ROOT
from stratus.config import Settings
from stratus.releases import release_of

AGENT_SRC = REPO_ROOT / "functions" / "agents" / "triage"


def run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="stratus")
    releases_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["releases", *argv])
    out = io.StringIO()
    code = args.func(args, out)
    return code, out.getvalue()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def copy_agent(dest: Path) -> Path:
    shutil.copytree(AGENT_SRC, dest, ignore=shutil.ignore_patterns("__pycache__", "evals"))
    return dest


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small git repository with the triage agent, then a commit that edits its prompt."""
    root = tmp_path / "repo"
    (root / "functions" / "agents").mkdir(parents=True)
    (root / "functions" / "__init__.py").write_text("")
    shutil.copy(REPO_ROOT / "functions" / "agents" / "__init__.py", root / "functions" / "agents")
    copy_agent(root / "functions" / "agents" / "triage")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "triage as it is")
    prompt = root / "functions" / "agents" / "triage" / "prompts" / "v1.md"
    lines = prompt.read_text().splitlines()
    lines[0] = "You are a VERY careful triage assistant."
    prompt.write_text("\n".join(lines) + "\n")
    git(root, "commit", "-q", "-am", "a prompt line changes")
    return root


def test_diff_between_two_git_refs_names_the_prompt_line_and_both_releases(repo: Path) -> None:
    code, out = run("diff", "--agent", "triage", "HEAD~1", "HEAD", "--repo", str(repo), "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["old"]["release"] != result["new"]["release"]
    assert result["old"]["release"].startswith("r-") and not result["same"]
    changes = result["changes"]
    assert "file prompts/v1.md: +1 -1 lines" in changes
    assert "    +You are a VERY careful triage assistant." in changes
    assert not any(line.startswith(("tier", "models", "tool ")) for line in changes)

    # The ref's release is what the runtime computes for that content.
    spec = load_agent("triage").model_copy(
        update={"prompt_dir": repo / "functions" / "agents" / "triage" / "prompts"}
    )
    assert result["new"]["release"] == release_of(spec, Settings())

    code, text = run("diff", "--agent", "triage", "HEAD", "HEAD", "--repo", str(repo))
    assert code == 0 and "the same release: nothing changed" in text


def test_diff_of_a_package_path_shows_a_model_tier_change(tmp_path: Path) -> None:
    package = copy_agent(tmp_path / "triage")
    init = package / "__init__.py"
    init.write_text(init.read_text().replace('tier="fast"', 'tier="smart"'))
    code, out = run("diff", "--agent", "triage", str(AGENT_SRC), str(package))
    assert code == 0, out
    assert 'tier: "fast" -> "smart"' in out
    assert any(line.strip().startswith("models: ") for line in out.splitlines())

    # ``working`` is this checkout: the same release the runtime computes here.
    code, out = run("diff", "--agent", "triage", "working", str(AGENT_SRC), "--json")
    result = json.loads(out)
    assert result["same"] and result["old"]["release"] == release_of(
        load_agent("triage"), Settings()
    )


def test_bad_refs_and_missing_options_exit_2(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("diff", "--agent", "triage", "no-such-ref", "HEAD", "--repo", str(repo))
    assert code == 2 and "not a path, 'working', or a git ref" in capsys.readouterr().err
    code, _ = run("diff", "--agent", "nobody", "HEAD", "HEAD", "--repo", str(repo))
    assert code == 2 and "cannot load agent 'nobody'" in capsys.readouterr().err
    code, _ = run("diff", "HEAD", "HEAD")
    assert code == 2 and "--agent A is required" in capsys.readouterr().err
    code, _ = run("--agent", "triage", "--state-file", str(repo / "missing.json"))
    assert code == 2 and "no local cloud is running" in capsys.readouterr().err


TEMPLATE = {
    "Resources": {
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            },
        },
        **{
            logical: {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Runtime": "python3.12",
                    "Handler": "index.handler",
                    "Role": {"Fn::GetAtt": ["Role", "Arn"]},
                    "Code": {"ZipFile": "def handler(e, c):\n    return e\n"},
                },
            }
            for logical in (
                "AgentsAgentTriageFunction1A2B3C4D",
                "AgentsWorkerTriageFunction5E6F7A8B",
                "AgentsAgentReturnsFunction0A0B0C0D",
            )
        },
    }
}


def test_a_stacks_live_aliases_versions_weights_and_releases(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName="Stratus-prod", TemplateBody=json.dumps(TEMPLATE))
    functions = releases_cli.stack_agent_functions(cfn, "Stratus-prod", "triage")
    assert set(functions) == {"api", "worker"}

    lam = boto3.client("lambda")
    api, worker = functions["api"], functions["worker"]
    old = lam.publish_version(FunctionName=api, Description="r-aaaaaaaaaaaa agent:triage")
    lam.update_function_configuration(FunctionName=api, Description="next")
    lam.get_waiter("function_updated_v2").wait(FunctionName=api)
    new = lam.publish_version(FunctionName=api, Description="r-bbbbbbbbbbbb agent:triage")
    lam.create_alias(
        FunctionName=api,
        Name="live",
        FunctionVersion=old["Version"],
        RoutingConfig={"AdditionalVersionWeights": {new["Version"]: 0.1}},
    )
    rows = {row["function"]: row for row in releases_cli.deployed(lam, functions)}
    assert rows["worker"]["alias"] is None  # not published yet: said so, not an error
    shares = {v["release"]: v["weight"] for v in rows["api"]["versions"]}
    assert shares == {"r-aaaaaaaaaaaa": 0.9, "r-bbbbbbbbbbbb": 0.1}

    monkeypatch.setattr(releases_cli, "stack_agent_functions", lambda *_: functions)
    code, out = run("--agent", "triage", "--stage", "prod")
    assert code == 0, out
    assert "version 1 90% r-aaaaaaaaaaaa" in out and "version 2 10% r-bbbbbbbbbbbb" in out
    assert "no 'live' alias" in out and worker in out
    assert release_of(load_agent("triage"), Settings()) in out  # the working tree's, beside


def test_a_version_without_a_release_in_its_description_uses_its_environment() -> None:
    config = {
        "Description": "",
        "Environment": {"Variables": {"STRATUS_RELEASE": "r-cccccccccccc"}},
    }
    assert releases_cli.release_of_version(config) == "r-cccccccccccc"
    assert releases_cli.release_of_version({"Description": "r-dddddddddddd worker:x"}) == (
        "r-dddddddddddd"
    )
    assert releases_cli.release_of_version({}) is None

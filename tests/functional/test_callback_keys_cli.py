"""``stratus callback-key`` against moto (issue 14): rotate prints the new secret once,
list never shows one, and a new tenant's first key comes from ``first_key``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import callback_keys_cli, operator_tables
from stratus.aws import AwsClients
from stratus.signing_keys import DynamoSigningKeyStore, SigningKeys


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert callback_keys_cli.main(list(argv)) == 0
    out = capsys.readouterr().out
    return json.loads(out) if "--json" in argv else out


def test_rotate_list_and_the_first_key(
    cloud: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = cloud["tables"]["callback_keys"]
    first = callback_keys_cli.first_key("acme", table=table)
    assert first is not None
    rotated = run(capsys, "rotate", "--tenant", "acme", "--table", table, "--grace", "60", "--json")
    assert rotated["kid"] != first.kid and rotated["secret"]
    assert [p["kid"] for p in rotated["previous"]] == [first.kid]
    listing = run(capsys, "list", "--tenant", "acme", "--table", table, "--json")
    assert {k["kid"] for k in listing["keys"]} == {first.kid, rotated["kid"]}
    assert rotated["secret"] not in json.dumps(listing) and first.secret not in json.dumps(listing)
    text = run(capsys, "list", "--tenant", "acme", "--table", table)
    assert first.kid in text and first.secret not in text
    keys = SigningKeys(DynamoSigningKeyStore(AwsClients().table(table)))
    assert keys.current("acme").kid == rotated["kid"]  # type: ignore[union-attr]
    with pytest.raises(SystemExit, match="grace"):
        callback_keys_cli.main(["rotate", "--tenant", "acme", "--table", table, "--grace", "-5"])


def test_without_a_table_a_new_tenant_keeps_the_fallback(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("STRATUS_CALLBACK_KEYS_TABLE", raising=False)
    monkeypatch.setattr(operator_tables, "LOCAL_FACTS", tmp_path / "no-local-cloud.json")
    assert callback_keys_cli.first_key("acme") is None

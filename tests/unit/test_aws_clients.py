"""The process's AWS clients: the User-Agent cache sends botocore's own header."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from stratus.aws import CONFIG, AwsClients, cache_user_agent


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data

    def read(self, *_: Any) -> bytes:
        return self._data


def _normal(header: str) -> str:
    """The header with its feature ids (``m/...``) in sorted order: botocore joins them
    from a set, whose order may differ from one request to the next."""
    parts = [
        "m/" + ",".join(sorted(part[2:].split(","))) if part.startswith("m/") else part
        for part in header.split(" ")
    ]
    return " ".join(parts)


def _sent_headers(client: Any) -> list[str]:
    """Answer every request of ``client`` in process; the User-Agent of each."""
    seen: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        seen.append(_normal(request.headers["User-Agent"].decode()))
        body = _Body(b'{"Items": [], "Count": 0, "ScannedCount": 0}')
        headers = {"content-type": "application/x-amz-json-1.0"}
        return AWSResponse(request.url, 200, headers, body)

    client.meta.events.register("before-send.dynamodb", answer)
    return seen


@pytest.mark.usefixtures("aws_credentials")
def test_cached_user_agent_is_botocores_own_per_feature_set() -> None:
    # A session of its own, as the runtime's: the credentials' feature ids (how they were
    # found) are part of the header, and the default session may have found them otherwise.
    plain = boto3.session.Session().client("dynamodb", config=CONFIG)
    ours = AwsClients().client("dynamodb")
    plain_sent, ours_sent = _sent_headers(plain), _sent_headers(ours)
    for client in (plain, ours, ours):
        client.scan(TableName="t")
    assert ours_sent == [plain_sent[0], plain_sent[0]]
    # A paginator registers a feature id of its own: its header lists it, as botocore's does.
    for client in (plain, ours):
        list(client.get_paginator("scan").paginate(TableName="t"))
    assert ours_sent[-1] == plain_sent[-1] != plain_sent[0]
    ours.scan(TableName="t")
    assert ours_sent[-1] == plain_sent[0]


@pytest.mark.usefixtures("aws_credentials")
def test_caching_twice_keeps_one_cache_and_odd_clients_are_left_alone() -> None:
    client = AwsClients().client("dynamodb")
    wrapped = client._user_agent_creator.to_string
    assert cache_user_agent(client) is client
    assert client._user_agent_creator.to_string is wrapped
    odd = object()
    assert cache_user_agent(odd) is odd


def test_requests_are_validated_by_the_service_not_the_client() -> None:
    assert CONFIG.parameter_validation is False

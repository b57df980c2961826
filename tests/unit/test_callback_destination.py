"""The callback destination check (SSRF guard), with a fake resolver: no DNS, no HTTP."""

from __future__ import annotations

import pytest

from stratus.jobs import callback_allowed, public_destination

HOSTS = {
    "hooks.example.com": ["93.184.216.34"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "localhost": ["127.0.0.1", "::1"],
    "intranet.example.com": ["10.1.2.3"],
    "split.example.com": ["93.184.216.34", "192.168.1.10"],
}


def resolver(host: str, port: int) -> list[str]:
    return HOSTS.get(host, [host] if host[0].isdigit() or ":" in host else [])


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/stratus",
        "http://hooks.example.com:8080/x",
        "https://v6.example.com/x",
        "https://8.8.8.8/x",
    ],
)
def test_public_destinations_are_allowed(url: str) -> None:
    assert public_destination(url, resolver)
    assert callback_allowed(url, allow_private=False, resolver=resolver)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",  # loopback
        "http://localhost/hook",  # resolves to loopback
        "http://[::1]/x",  # loopback v6
        "http://10.1.2.3/x",  # private
        "http://192.168.0.5/x",  # private
        "http://intranet.example.com/x",  # a name for a private address
        "http://169.254.169.254/latest/meta-data/",  # instance metadata (link-local)
        "http://[fe80::1]/x",  # link-local v6
        "http://100.64.0.1/x",  # shared address space
        "http://split.example.com/x",  # one private address is enough to refuse
        "http://no-such-host.invalid/x",  # does not resolve
    ],
)
def test_non_public_destinations_are_refused_unless_allowed(url: str) -> None:
    assert not public_destination(url, resolver)
    assert not callback_allowed(url, allow_private=False, resolver=resolver)
    assert callback_allowed(url, allow_private=True, resolver=resolver)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://hooks.example.com/x"])
def test_other_schemes_are_refused_even_when_private_is_allowed(url: str) -> None:
    assert not callback_allowed(url, allow_private=True, resolver=resolver)


def test_a_url_without_a_host_is_not_public() -> None:
    assert not public_destination("http:///x", resolver)
    assert not callback_allowed("http:///x", allow_private=False, resolver=resolver)

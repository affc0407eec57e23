"""The SDK's one proxy rule for every URL it opens (vora_client.proxy), read from the environment or given."""

from __future__ import annotations

import pytest
from vora_client import resolve_proxy

VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start with no proxy variable set."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize(
    ("variables", "url", "expected"),
    [
        ({"HTTP_PROXY": "http://p:3128"}, "ws://vora:18085/vora/ws", "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128"}, "ws://vora:18085/vora/ws", None),
        ({"HTTPS_PROXY": "http://p:3128"}, "wss://vora/vora/ws", "http://p:3128"),
        ({"ALL_PROXY": "http://p:3128"}, "wss://vora/vora/ws", "http://p:3128"),
        ({"HTTP_PROXY": "http://a:1", "ALL_PROXY": "http://b:2"}, "http://vora/vora", "http://a:1"),
        ({"http_proxy": "p:3128"}, "http://vora/vora", "http://p:3128"),
        ({"HTTP_PROXY": "http://p:3128"}, "http://127.0.0.1:18085/vora", "http://p:3128"),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "localhost,127.0.0.1"}, "ws://127.0.0.1:1/vora/ws", None),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "::1"}, "http://[::1]:18085/vora", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".corp.example"}, "https://corp.example/vora", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "corp.example"}, "wss://vora.corp.example/ws", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "corp.example"}, "https://xcorp.example/", "http://p:3128"),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "vora:8080"}, "http://vora:8080/vora", None),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "vora:8080"}, "http://vora:8081/vora", "http://p:3128"),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "*"}, "http://vora/vora", None),
    ],
)
def test_the_environment_decides_per_url(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], url: str, expected: str | None
) -> None:
    """The scheme's variable, else ALL_PROXY, unless NO_PROXY names the host, a domain of it, or host:port."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert resolve_proxy(url) == expected


def test_an_explicit_setting_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy URL is used for every URL, NO_PROXY included; None and False mean no proxy at all."""
    monkeypatch.setenv("HTTP_PROXY", "http://env:1")
    monkeypatch.setenv("NO_PROXY", "vora")
    assert resolve_proxy("ws://vora/vora/ws", "http://u:pw@mine:3128") == "http://u:pw@mine:3128"
    assert resolve_proxy("http://other/vora", None) is None
    assert resolve_proxy("http://other/vora", False) is None


@pytest.mark.parametrize(
    "proxy",
    ["socks5://p:1080", "p:3128", "http://p:3128/path", "http://user@p:3128", "http://us%40er:pw@p:3128"],
)
def test_a_proxy_url_both_libraries_cannot_take_alike_is_refused(proxy: str) -> None:
    """Not http(s), no host, a path, a user without password, or percent-encoded credentials: ValueError."""
    with pytest.raises(ValueError, match="proxy"):
        resolve_proxy("http://vora/vora", proxy)

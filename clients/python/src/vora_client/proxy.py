"""Which forward proxy reaches VORA: one rule for httpx (REST, Server-Sent Events) and websockets (the WebSocket).

httpx and websockets each read the proxy environment their own way: websockets prefers HTTPS_PROXY to
HTTP_PROXY even for ws://, ignores ALL_PROXY, and leaves a proxy URL's credentials percent-encoded,
where httpx decodes them. So the SDK decides once per URL, by the rule below, and hands both libraries
the same explicit answer: a stream's REST calls, its WebSocket and its Server-Sent Events always take the
same path.

- proxy=True (the default): from the environment, read when the client or transport is made. NO_PROXY
  (or no_proxy; comma-separated host names, domain suffixes, host:port, or `*`) sends a host direct;
  otherwise https:// and wss:// URLs take HTTPS_PROXY, http:// and ws:// URLs HTTP_PROXY, and either
  falls back to ALL_PROXY. Loopback gets no exception of its own (as with curl): list localhost,
  127.0.0.1 and ::1 in NO_PROXY to keep them direct.
- proxy="http://user:password@host:port" (or https://): that proxy for every URL, NO_PROXY ignored.
- proxy=None or False: no proxy, whatever the environment says.
"""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import urlsplit

import httpx

# A proxy setting: True (from the environment), a proxy URL, or None/False (none).
ProxySetting = str | bool | None

_PROXY_SCHEMES = frozenset({"http", "https"})
# What each URL scheme the SDK opens is, for choosing a proxy: the WebSocket's scheme follows its TLS.
_AS_HTTP = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
# An httpx client built with these ignores the proxy environment (and keeps the rest of trust_env: SSL_CERT_FILE).
_NO_PROXY_MOUNTS: dict[str, httpx.AsyncBaseTransport | None] = {"http://": None, "https://": None, "all://": None}


def check_proxy_url(proxy: str) -> str:
    """Return proxy when it is a proxy URL both libraries take the same way; raise ValueError if not."""
    parts = urlsplit(proxy)
    if parts.scheme not in _PROXY_SCHEMES or not parts.hostname:
        raise ValueError(f"a proxy must be an http:// or https:// URL with a host, not {_masked(proxy)!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a proxy URL has no path, query or fragment: {_masked(proxy)!r}")
    if (parts.username is None) != (parts.password is None):
        raise ValueError("a proxy URL's credentials need both a user name and a password")
    if "%" in (parts.username or "") + (parts.password or ""):
        # httpx decodes them and websockets 15 sends them as written: the WebSocket would get a 407 where REST passes.
        raise ValueError("percent-encoded proxy credentials are not supported (websockets would send them encoded)")
    return proxy


def resolve_proxy(url: str, setting: ProxySetting = True) -> str | None:
    """Return the proxy URL that url (http, https, ws or wss) goes through, or None to go direct."""
    if setting is None or setting is False:
        return None
    if isinstance(setting, str):
        return check_proxy_url(setting)
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    host = parts.hostname or ""
    port = parts.port or (443 if _AS_HTTP.get(parts.scheme) == "https" else 80)
    if _bypassed(host, port, proxies.get("no", "")):
        return None
    chosen = proxies.get(_AS_HTTP.get(parts.scheme, parts.scheme)) or proxies.get("all")
    if not chosen:
        return None
    if "://" not in chosen:  # HTTP_PROXY=proxy:3128, as curl takes it
        chosen = f"http://{chosen}"
    return check_proxy_url(chosen)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Tell whether NO_PROXY sends host:port direct: `*`, the host, a domain it ends in, or host:port (curl's rule)."""
    host = host.lower().strip("[]")
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if entry == "*":
            return True
        name, wanted_port = entry, None
        if entry.startswith("["):  # [::1]:8080
            name, _, rest = entry[1:].partition("]")
            wanted_port = rest.removeprefix(":") or None
        elif entry.count(":") == 1:  # host:8080 (more colons: a bare IPv6 address)
            name, _, wanted_port = entry.partition(":")
        name = name.lstrip(".")
        if not name or (wanted_port is not None and wanted_port != str(port)):
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


def httpx_proxy_options(proxy: str | None) -> dict[str, Any]:
    """Return the httpx.AsyncClient options that send its requests through proxy, or direct for None."""
    if proxy is None:
        return {"mounts": dict(_NO_PROXY_MOUNTS)}
    return {"proxy": proxy}


def _masked(proxy: str) -> str:
    """Return proxy with its password hidden, for an error message."""
    parts = urlsplit(proxy)
    if parts.password is None:
        return proxy
    return proxy.replace(f":{parts.password}@", ":***@", 1)

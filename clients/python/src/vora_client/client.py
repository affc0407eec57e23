"""The REST half of VORA's client protocol: identities, setup, subscription and logout."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, cast
from urllib.parse import quote

import httpx

from vora_client.errors import (
    AccessTokenProviderFailed,
    AccessTokenRefused,
    ConnectionFailed,
    ProxyAuthenticationRequired,
    error_from_response,
)
from vora_client.proxy import ProxySetting, httpx_proxy_options, resolve_proxy


class RefreshingTokenProvider(Protocol):
    """An access-token provider told when VORA refused its last token (refresh=True: get a new one)."""

    def __call__(self, *, refresh: bool = False) -> Awaitable[str] | str:
        """Return an access token: a fresh one when refresh is True."""
        ...


# A plain provider is simply called again after a 401; one that takes `refresh` is told why. Either may be a plain
# function returning the token (one the app already holds), as the TypeScript SDK's may.
TokenProvider = Callable[[], Awaitable[str] | str] | RefreshingTokenProvider


def _takes_refresh(provider: object) -> bool:
    try:
        parameters = inspect.signature(provider).parameters.values()  # type: ignore[arg-type] # any callable
    except (TypeError, ValueError):
        return False
    return any(p.name == "refresh" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


ConnectionType = Literal["WebSocket", "ServerSentEvents"]


class PushRegistration(TypedDict, total=False):
    """A mobile device's push registration (spec/vora.yaml, PushRegistration)."""

    platform: Literal["apns", "fcm", "webpush"]
    deviceToken: str
    appId: str


@dataclass(frozen=True)
class Session:
    """What setup returned: the identity, the token that opens its event stream and where its first connection starts.

    last_event_id is setup's lastEventId (None from a VORA that sends none): a stream with no position of its
    own opens the session's first connection with it, so one dropped before its channelOpened resumes from setup.
    """

    identity: str
    web_socket_token: str
    connection_type: ConnectionType = "WebSocket"
    last_event_id: str | None = None


class VoraClient:
    """Call VORA's REST API with access tokens from the app's provider (which owns OAuth and its refresh).

    proxy is the forward proxy of the REST calls and of every stream made with this client (vora_client.proxy):
    True reads HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY once, now; a URL names one; None or False: none.
    """

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        timeout: float = 10.0,
        access_token_timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        proxy: ProxySetting = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Streams resolve it again for their own URLs (the same host, so the same answer unless ws_url says otherwise).
        self.proxy = proxy
        self._token_provider = token_provider
        # A provider that never answers (an OAuth server that accepts and stalls) must not hold a stream for ever.
        self._access_token_timeout = access_token_timeout
        self._tell_refresh = _takes_refresh(token_provider)
        # An app's own httpx client keeps its own proxy settings; resolving checks the setting all the same.
        options = httpx_proxy_options(resolve_proxy(self.base_url, proxy))
        self._http = http or httpx.AsyncClient(timeout=timeout, **options)
        self._owns_http = http is None

    async def __aenter__(self) -> VoraClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections this client opened."""
        if self._owns_http:
            await self._http.aclose()

    async def identities(self) -> list[str]:
        """Return the identities the token's user owns."""
        answer = await self._call("GET", "/identity")
        return [str(identity) for identity in answer["identities"]]

    async def setup(
        self,
        identity: str,
        *,
        connection_type: ConnectionType = "WebSocket",
        hold_up_mode: bool = False,
        push: PushRegistration | None = None,
    ) -> Session:
        """Open a session on one of the user's identities and return the token for its event stream."""
        body: dict[str, Any] = {"connectionType": connection_type, "identity": identity, "holdUpMode": hold_up_mode}
        if push is not None:
            body["push"] = dict(push)
        answer = await self._call("POST", "/identity/setup", body)
        start = answer.get("lastEventId")
        position = start if isinstance(start, str) else None
        return Session(identity, str(answer["webSocketToken"]), connection_type, position)

    async def subscribe(self, identity: str, events: Sequence[str] = (), *, subscribe_all: bool = False) -> None:
        """Choose the events the identity's session receives (all that the token's scopes allow with subscribe_all)."""
        body: dict[str, Any] = {"subscribeAll": subscribe_all, "events": list(events)}
        await self._call("POST", f"/identity/{quote(identity, safe='')}/eventSubscription", body)

    async def logout(self, identity: str) -> None:
        """End the identity's sessions: every stream of them closes with channelTerminated logout."""
        await self._call("POST", f"/logout/{quote(identity, safe='')}")

    async def _ask_provider(self, refresh: bool) -> str:
        if self._tell_refresh:
            token = cast(RefreshingTokenProvider, self._token_provider)(refresh=refresh)
        else:
            token = self._token_provider()
        return await token if inspect.isawaitable(token) else token

    async def _token(self, refresh: bool) -> str:
        """Ask the app's provider for a token within access_token_timeout; raise AccessTokenProviderFailed if not."""
        limit = asyncio.timeout(self._access_token_timeout)
        try:
            async with limit:
                return await self._ask_provider(refresh)
        except AccessTokenRefused as exc:
            raise AccessTokenProviderFailed(f"the access token provider refused: {exc}", refused=True) from exc
        except TimeoutError as exc:
            if not limit.expired():  # the provider's own timeout: a failure like any other
                raise AccessTokenProviderFailed(f"the access token provider failed: {exc!r}", refused=False) from exc
            seconds = f"{self._access_token_timeout:g}"
            message = f"the access token provider gave no token within {seconds} s"
            raise AccessTokenProviderFailed(message, refused=False) from exc
        except Exception as exc:  # whatever the app's OAuth code raised, the caller learns it typed
            raise AccessTokenProviderFailed(f"the access token provider failed: {exc!r}", refused=False) from exc

    async def _send(self, method: str, path: str, body: dict[str, Any] | None, refresh: bool) -> httpx.Response:
        token = await self._token(refresh)
        try:
            return await self._http.request(
                method,
                self.base_url + path,
                json=body,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
        except httpx.ProxyError as exc:
            # httpcore words a refused CONNECT "STATUS REASON": a proxy asking for credentials is no VORA 401.
            if str(exc).startswith("407"):
                raise ProxyAuthenticationRequired(f"{method} {path}: the proxy answered {exc}") from exc
            raise ConnectionFailed(f"{method} {path}: the proxy refused: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self._send(method, path, body, refresh=False)
        if response.status_code == 407:  # VORA never sends it: the proxy of a plain http:// request wants credentials
            raise ProxyAuthenticationRequired(f"{method} {path}: the proxy answered 407", response.headers)
        if response.status_code == 401:
            # The provider may hold a stale token (it expired): ask once for a fresh one, as the TypeScript SDK does.
            response = await self._send(method, path, body, refresh=True)
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content, response.headers)
        if not response.content:
            return {}
        parsed: dict[str, Any] = response.json()
        return parsed

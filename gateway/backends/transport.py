"""How the gateway talks HTTP to a backend: one small interface, two implementations.

    Upstream.stream(...)  -> UpstreamResponse   (headers in, body still arriving)
    Upstream.request(...) -> Reply              (whole body; probes, tokenize, metrics)

``AiohttpUpstream`` is the production path: measured here, one proxied request costs
about 0.16 ms of CPU in aiohttp against 0.6-1.5 ms in httpx, whose connection pool checks
every idle connection on every request. ``HttpxUpstream`` serves tests, where an
``httpx.MockTransport`` stands in for the network. Both translate their library's
exceptions into the three below, so nothing above this module sees aiohttp or httpx.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx


class UpstreamError(Exception):
    """A backend could not be talked to."""


class UpstreamConnectError(UpstreamError):
    """Nothing reached the backend (refused, unreachable, connect timeout)."""


class UpstreamTimeoutError(UpstreamError):
    """The backend went silent for longer than the read timeout."""


class UpstreamProtocolError(UpstreamError):
    """The connection broke or the reply was malformed after the request was sent."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float
    write: float


@dataclass(frozen=True, slots=True)
class Reply:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class UpstreamResponse(Protocol):
    status_code: int
    headers: Mapping[str, str]

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def stream(self, path: str, body: bytes,
                     headers: Mapping[str, str] | None = None) -> UpstreamResponse: ...

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      timeout_s: float | None = None) -> Reply: ...

    async def aclose(self) -> None: ...


JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


# -- aiohttp ------------------------------------------------------------------------------


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError(str(exc) or "read timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"{type(exc).__name__}: {exc}") from exc

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError(str(exc) or "read timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        self._response.release()  # back to the pool if the body was read, else closed


class AiohttpUpstream:
    def __init__(self, base_url: str, *, headers: Mapping[str, str], timeouts: Timeouts,
                 max_connections: int, keepalive_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect,
                                              sock_read=timeouts.read)
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._control_session: aiohttp.ClientSession | None = None

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=self._keepalive_s,
                                         ttl_dns_cache=300)
        return aiohttp.ClientSession(
            connector=connector, headers=self._headers, timeout=self._timeout,
            auto_decompress=False, skip_auto_headers=("User-Agent",),
        )

    def _client(self) -> aiohttp.ClientSession:
        # created lazily: an aiohttp session must be born inside the running loop
        if self._session is None or self._session.closed:
            self._session = self._new_session(self._max_connections)
        return self._session

    def _control(self) -> aiohttp.ClientSession:
        # probes, tokenize and /metrics get their own small pool: a short per-request
        # timeout on a pooled connection must never meet a long stream on the same socket
        if self._control_session is None or self._control_session.closed:
            self._control_session = self._new_session(4)
        return self._control_session

    async def stream(self, path: str, body: bytes,
                     headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        try:
            response = await self._client().post(
                self.base_url + path, data=body, headers={**JSON_HEADERS, **(headers or {})})
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError(str(exc) or "read timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"{type(exc).__name__}: {exc}") from exc
        return _AiohttpResponse(response)

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      timeout_s: float | None = None) -> Reply:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout_s is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._control().request(method, self.base_url + path, **kwargs) as r:
                return Reply(r.status, await r.read())
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError("timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        for session in (self._session, self._control_session):
            if session is not None:
                await session.close()


# -- httpx (tests: MockTransport) ---------------------------------------------------------


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc

    async def aread(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


def _translate(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return UpstreamConnectError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"{type(exc).__name__}: {exc}")
    return UpstreamProtocolError(f"{type(exc).__name__}: {exc}")


class HttpxUpstream:
    def __init__(self, base_url: str, *, headers: Mapping[str, str], timeouts: Timeouts,
                 max_connections: int, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.base_url = base_url
        self.client = httpx.AsyncClient(
            base_url=base_url, headers=dict(headers), transport=transport,
            timeout=httpx.Timeout(connect=timeouts.connect, read=timeouts.read,
                                  write=timeouts.write, pool=timeouts.connect),
            limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=30.0),
        )

    async def stream(self, path: str, body: bytes,
                     headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        request = self.client.build_request("POST", path, content=body,
                                            headers={**JSON_HEADERS, **(headers or {})})
        try:
            return _HttpxResponse(await self.client.send(request, stream=True))
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      timeout_s: float | None = None) -> Reply:
        try:
            r = await self.client.request(method, path, json=json_body,
                                          timeout=timeout_s if timeout_s is not None
                                          else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc
        return Reply(r.status_code, r.content)

    async def aclose(self) -> None:
        await self.client.aclose()


def make_upstream(base_url: str, *, headers: Mapping[str, str], timeouts: Timeouts,
                  max_connections: int, transport: httpx.AsyncBaseTransport | None) -> Upstream:
    if transport is not None:
        return HttpxUpstream(base_url, headers=headers, timeouts=timeouts,
                             max_connections=max_connections, transport=transport)
    return AiohttpUpstream(base_url, headers=headers, timeouts=timeouts,
                           max_connections=max_connections)

"""A lean HTTP/1.1 client for plain-http backends: keep-alive sockets and httptools' parser.

Profiled at 32 concurrent requests, aiohttp's client was a quarter of the gateway's CPU
per proxied request (its request and response objects, header multidicts, payload
registry, tracing hooks and timers), for what is, to an engine on the cluster network,
one POST with a JSON body on a kept-alive connection. This client does only that: it
writes the request line, the fixed headers (rendered once per backend) and the body in
one ``write``, and parses the reply with ``httptools`` (llhttp, the parser uvicorn
serves with), so framing (Content-Length, chunked, close-delimited) is never ours.

Semantics are those of ``AiohttpUpstream``: the connection pool is LIFO with at most
``max_connections`` sockets (a request waits for a free one), idle sockets expire after
``keepalive_s``; the read timeout is the longest silence while a reply is awaited or
arriving; the write timeout is the kernel's TCP_USER_TIMEOUT; a reply whose body was read
to its end goes back to the pool, anything else closes its socket. A reused socket that
fails before any byte of the reply came back also empties the idle list, so the caller's
one retry gets a fresh connection, not the next stale one. HTTPS backends use aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

from gateway.backends.transport import (
    JSON_HEADERS,
    Reply,
    Timeouts,
    TransportConnectError,
    TransportError,
    TransportProtocolError,
    TransportTimeoutError,
)

_PAUSE_AT = 1 << 20  # bytes of unread body before the socket stops being read
_DNS_TTL_S = 300.0


def _header_block(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class StaleConnectionError(TransportProtocolError):
    """A kept-alive socket the backend had closed: nothing of the request was answered,
    so it may be sent again on a fresh one (what ``dispatch`` does for chat, and
    ``request`` here for probes and tokenize: the keep-alive race, not a failure)."""


class _Connection(asyncio.Protocol):
    """One socket; ``response`` is the reply it is reading, if any."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.reused = False  # has carried a request before the current one
        self.idle_since = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes no request asked for: this socket cannot be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(TransportProtocolError(f"malformed reply: {exc}"))
            self.close()
        response.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response.lost(exc)
        self.pool.forget(self)

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        headers = self.response.fields
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.status_code = self.parser.get_status_code()
        self.response.headers_done = True

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.add(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response.complete = True
        self.response.keep_alive = self.parser.should_keep_alive()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()  # connection_lost follows: the pool forgets it then
        self.closed = True

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()


class Response:
    """A reply: headers known, body arriving (``aiter_raw``) or read whole (``aread``)."""

    def __init__(self, connection: _Connection, read_timeout_s: float) -> None:
        self.connection = connection
        self.status_code = 0
        self.fields: dict[str, str] = {}  # filled by the parser; lower-case names
        self.headers: Mapping[str, str] = self.fields
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout_s = read_timeout_s
        self._released = False

    # -- from the connection
    def add(self, body: bytes) -> None:
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_AT and not self._paused:
            self._paused = True
            self.connection.pause()

    def fail(self, error: TransportError) -> None:
        self._error = self._error or error
        self.wake()

    def lost(self, exc: Exception | None) -> None:
        if self.complete:
            return
        if exc is None and self.headers_done and not self._framed():
            self.complete = True  # close-delimited body: the close is its end
        elif not self.headers_done:
            self.fail(TransportProtocolError(
                f"the backend closed the connection before replying{_cause(exc)}"))
        else:
            self.fail(TransportProtocolError(
                f"the backend closed the connection mid-reply{_cause(exc)}"))
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _framed(self) -> bool:
        return "content-length" in self.headers or "transfer-encoding" in self.headers

    # -- for the caller
    async def _wait(self, ready: Callable[[], bool]) -> None:
        """Until ``ready()``; a silence longer than the read timeout is a timeout."""
        loop = asyncio.get_running_loop()
        while not ready():
            if self._error is not None:
                raise self._error
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(self._read_timeout_s, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    async def wait_headers(self) -> None:
        await self._wait(lambda: self.headers_done or self._error is not None)
        if self._error is not None:
            raise self._error

    def _take(self) -> bytes:
        data = b"".join(self._pieces) if len(self._pieces) != 1 else self._pieces[0]
        self._pieces.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self.connection.resume()
        return data

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        while True:
            await self._wait(lambda: bool(self._pieces) or self.complete
                             or self._error is not None)
            if self._pieces:
                yield self._take()
            elif self._error is not None:
                raise self._error
            else:
                return

    async def aread(self) -> bytes:
        await self._wait(lambda: self.complete or self._error is not None)
        if self._error is not None:
            raise self._error
        return self._take()

    async def aclose(self) -> None:
        """Back to the pool if the reply was read to its end, else the socket closes."""
        self._release(reusable=self.complete and self.keep_alive and self._error is None
                      and not self._pieces)

    async def discard(self) -> None:
        self._release(reusable=False)

    def _release(self, *, reusable: bool) -> None:
        if self._released:
            return
        self._released = True
        self.connection.response = None
        self.connection.pool.release(self.connection, reusable=reusable)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TransportTimeoutError("read timeout"))


def _cause(exc: Exception | None) -> str:
    return f" ({type(exc).__name__}: {exc})" if exc is not None else ""


class _Pool:
    """Keep-alive sockets to one backend, at most ``limit`` open at once."""

    def __init__(self, host: str, port: int, *, limit: int, timeouts: Timeouts,
                 keepalive_s: float) -> None:
        self.host, self.port = host, port
        self.limit = limit
        self.timeouts = timeouts
        self.keepalive_s = keepalive_s
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._addresses: list[Any] = []
        self._resolved_at = -_DNS_TTL_S
        self.closed = False

    async def acquire(self) -> _Connection:
        while True:
            now = time.monotonic()
            while self.idle:
                connection = self.idle.pop()
                if connection.closed or now - connection.idle_since > self.keepalive_s:
                    connection.close()
                    continue
                connection.reused = True
                return connection
            if len(self.open) < self.limit:
                return await self._connect()
            waiter: asyncio.Future[_Connection | None] = (
                asyncio.get_running_loop().create_future())
            self.waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed over as we left
                    given = waiter.result()
                    if given is not None:
                        self.release(given, reusable=True)
                    else:
                        self._wake_one()
                raise
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            if handed is not None:
                handed.reused = True
                return handed
            # None: a socket closed, so there is room to open one; go round again

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        placeholder = _Connection(self)  # holds the slot while connecting
        self.open.add(placeholder)
        connected = False
        try:
            addresses = await self._resolve()
            last: Exception | None = None
            for family, type_, proto, _, address in addresses:
                sock = socket.socket(family, type_, proto)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if hasattr(socket, "TCP_USER_TIMEOUT"):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                        max(int(self.timeouts.write * 1000), 1))
                    async with asyncio.timeout(self.timeouts.connect):
                        await loop.sock_connect(sock, address)
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self), sock=sock)
                except (OSError, TimeoutError) as exc:
                    sock.close()
                    last = exc
                    continue
                self.open.add(connection)
                connected = True
                return connection
            what = "connect timeout" if isinstance(last, TimeoutError) else str(last)
            raise TransportConnectError(
                f"cannot connect to {self.host}:{self.port}: {what}") from last
        finally:
            self.open.discard(placeholder)
            if not connected:
                self._wake_one()  # the slot is free again

    async def _resolve(self) -> list[Any]:
        now = time.monotonic()
        if now - self._resolved_at > _DNS_TTL_S or not self._addresses:
            try:
                self._addresses = await asyncio.get_running_loop().getaddrinfo(
                    self.host, self.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise TransportConnectError(
                    f"cannot resolve {self.host}: {exc}") from exc
            self._resolved_at = now
        return self._addresses

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        if not reusable or connection.closed or self.closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """The socket closed (either side): its slot is free."""
        if connection in self.open:
            self.open.discard(connection)
            if connection in self.idle:
                self.idle.remove(connection)
            self._wake_one()

    def _wake_one(self) -> None:
        """A slot is free: the first waiter opens a socket of its own."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def drop_idle(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()

    def close(self) -> None:
        self.closed = True
        for connection in list(self.open):
            connection.close()
        self.idle.clear()


class Http1Upstream:
    """``Upstream`` over plain HTTP/1.1 (see the module's docstring)."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str], timeouts: Timeouts,
                 max_connections: int, keepalive_s: float = 30.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"Http1Upstream takes http:// URLs, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._prefix = url.path.rstrip("/")
        port = url.port or 80
        host = url.hostname if ":" not in url.hostname else f"[{url.hostname}]"
        self._fixed = _header_block({
            "host": host if port == 80 else f"{host}:{port}", **JSON_HEADERS, **headers})
        self._timeouts = timeouts
        self._pool = _Pool(url.hostname, port, limit=max_connections, timeouts=timeouts,
                           keepalive_s=keepalive_s)
        # probes, tokenize and /metrics get their own small pool: a short per-request
        # timeout on a pooled connection must never meet a long stream on the same socket
        self._control = _Pool(url.hostname, port, limit=4, timeouts=timeouts,
                              keepalive_s=keepalive_s)

    def _head(self, method: str, path: str, length: int | None,
              headers: Mapping[str, str] | None) -> bytes:
        line = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1")
        extra = _header_block(headers) if headers else b""
        size = b"" if length is None else b"content-length: %d\r\n" % length
        return line + self._fixed + extra + size + b"\r\n"

    async def _send(self, pool: _Pool, method: str, path: str, body: bytes | None,
                    headers: Mapping[str, str] | None) -> Response:
        if any(c in path for c in " \r\n"):
            raise ValueError(f"path {path!r} holds white space")
        head = self._head(method, path, None if body is None else len(body), headers)
        connection = await pool.acquire()
        response = Response(connection, self._timeouts.read)
        connection.response = response
        assert connection.transport is not None
        if body and len(body) > 65536:
            connection.transport.writelines((head, body))  # no copy of a long prompt
        else:
            connection.transport.write(head + body if body else head)
        try:
            await response.wait_headers()
        except TransportProtocolError as exc:
            await response.discard()
            if connection.reused and not response.headers_done:
                pool.drop_idle()  # the backend closed its idle sockets: retry on a fresh one
                raise StaleConnectionError(str(exc)) from exc
            raise
        except BaseException:
            await response.discard()
            raise
        return response

    async def stream(self, path: str, body: bytes,
                     headers: Mapping[str, str] | None = None) -> Response:
        return await self._send(self._pool, "POST", path, body, headers)

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      timeout_s: float | None = None) -> Reply:
        body = None if json_body is None else json.dumps(json_body).encode()
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    response = await self._send(self._control, method, path, body, None)
                except StaleConnectionError:  # once more, on a fresh socket
                    response = await self._send(self._control, method, path, body, None)
                try:
                    content = await response.aread()
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise TransportTimeoutError("timeout") from exc
        return Reply(response.status_code, content)

    async def aclose(self) -> None:
        self._pool.close()
        self._control.close()

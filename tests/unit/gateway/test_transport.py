"""Both upstream clients (aiohttp, and our HTTP/1.1 one) against real sockets: replies,
and failures in our own terms."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.backends.http1 import Http1Upstream
from gateway.backends.transport import (
    AiohttpUpstream,
    Timeouts,
    TransportConnectError,
    TransportProtocolError,
    TransportTimeoutError,
)
from serving import free_port

REPLY = json.dumps({"object": "list", "data": []}).encode()


async def serve(handler) -> tuple[asyncio.Server, str]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


Make = Callable[..., Any]


@pytest.fixture(params=[AiohttpUpstream, Http1Upstream], ids=["aiohttp", "http1"])
def upstream(request: pytest.FixtureRequest) -> Make:
    def make(url: str, read: float = 5.0, connections: int = 4) -> Any:
        return request.param(url, headers={}, timeouts=Timeouts(1.0, read, 1.0),
                             max_connections=connections)
    return make


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    return await reader.readexactly(length) if length else b""


async def test_request_and_stream_round_trip(upstream: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            payload = body or REPLY
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    client = upstream(url)
    try:
        reply = await client.request("GET", "/v1/models", timeout_s=2)
        assert reply.status_code == 200 and reply.json() == {"object": "list", "data": []}
        response = await client.stream("/v1/chat/completions", b'{"echo": 1}')
        assert response.status_code == 200
        assert b"".join([c async for c in response.aiter_raw()]) == b'{"echo": 1}'
        await response.aclose()
    finally:
        await client.aclose()
        server.close()


async def test_refused_connection_is_a_connect_error(upstream: Make) -> None:
    client = upstream(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TransportConnectError):
            await client.stream("/v1/chat/completions", b"{}")
        with pytest.raises(TransportConnectError):
            await client.request("GET", "/health", timeout_s=1)
    finally:
        await client.aclose()


async def test_silent_backend_is_a_timeout(upstream: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1)  # never answers within the read timeout

    server, url = await serve(handler)
    client = upstream(url, read=0.3)
    try:
        with pytest.raises(TransportTimeoutError):
            await client.stream("/v1/chat/completions", b"{}")
    finally:
        await client.aclose()
        server.close()


async def test_connection_cut_mid_body_is_a_protocol_error(upstream: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()  # the stream ends without its final chunk

    server, url = await serve(handler)
    client = upstream(url)
    try:
        response = await client.stream("/v1/chat/completions", b"{}")
        with pytest.raises(TransportProtocolError):
            async for _ in response.aiter_raw():
                pass
        await response.aclose()
    finally:
        await client.aclose()
        server.close()


def test_connections_carry_the_write_timeout_as_tcp_user_timeout() -> None:
    """aiohttp has no write timeout: the kernel's TCP_USER_TIMEOUT gives up on data a
    backend leaves unacknowledged for write_timeout_s."""
    import socket

    from gateway.backends.transport import write_timeout_socket

    sock = write_timeout_socket(2.5)((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("", 0)))
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2500
    finally:
        sock.close()


async def test_the_pool_uses_the_write_timeout_socket() -> None:
    server, url = await serve(lambda reader, writer: _reply_once(reader, writer))
    client = AiohttpUpstream(url, headers={}, timeouts=Timeouts(1.0, 5.0, 1.0),
                             max_connections=4)
    try:
        assert (await client.request("GET", "/v1/models")).status_code == 200
        connector = client._control()._connector
        assert connector is not None
        assert connector._socket_factory is not None  # type: ignore[attr-defined]
    finally:
        await client.aclose()
        server.close()


async def _reply_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(REPLY), REPLY))
    await writer.drain()


# -- our HTTP/1.1 client: what aiohttp did for us, kept ---------------------------------


def http1(url: str, read: float = 5.0, connections: int = 4, write: float = 1.0
          ) -> Http1Upstream:
    return Http1Upstream(url, headers={"authorization": "Bearer k"},
                         timeouts=Timeouts(1.0, read, write), max_connections=connections)


def keep_alive_server(replies: list[bytes], seen: list[bytes]) -> Callable[..., Any]:
    """Answers each request on a connection with the next reply; counts connections."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(b"connection")
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), 0)
            body = await reader.readexactly(length) if length else b""
            seen.append(head + body)
            writer.write(replies[min(len(seen) - 2, len(replies) - 1)])
            await writer.drain()
    return handler


def ok(payload: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)


async def test_one_socket_carries_request_after_request() -> None:
    seen: list[bytes] = []
    server, url = await serve(keep_alive_server([ok(b"one"), ok(b"two"), ok(b"three")], seen))
    client = http1(url + "/prefix")
    try:
        for expected in (b"one", b"two", b"three"):
            response = await client.stream("/v1/chat/completions", b'{"a":1}',
                                           {"x-request-id": "r1"})
            assert await response.aread() == expected
            await response.aclose()
        assert seen.count(b"connection") == 1
        request = seen[1]
        assert request.startswith(b"POST /prefix/v1/chat/completions HTTP/1.1\r\n")
        for header in (b"authorization: Bearer k", b"content-type: application/json",
                       b"x-request-id: r1", b"content-length: 7", b"host: 127.0.0.1:"):
            assert header in request
        assert request.endswith(b'\r\n\r\n{"a":1}')
    finally:
        await client.aclose()
        server.close()


async def test_a_reply_not_read_to_its_end_closes_its_socket() -> None:
    seen: list[bytes] = []
    big = ok(b"x" * 100_000)
    server, url = await serve(keep_alive_server([big, ok(b"after")], seen))
    client = http1(url)
    try:
        response = await client.stream("/v1/chat/completions", b"{}")
        await response.aclose()  # body left unread: the socket must not be reused
        response = await client.stream("/v1/chat/completions", b"{}")
        assert await response.aread() == b"after"
        await response.aclose()
        assert seen.count(b"connection") == 2
    finally:
        await client.aclose()
        server.close()


def closes_on_its_second_request(first: bytes, later: bytes
                                 ) -> tuple[Callable[..., Any], list[int]]:
    """The keep-alive race, on purpose: the first connection answers one request, then
    closes when the next one arrives, without a reply; later connections answer
    ``later``. The list holds each connection's number as it opens."""
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        number = connections[-1]
        await read_request(reader)
        writer.write(first if number == 1 else later)
        await writer.drain()
        if number == 1:
            await read_request(reader)
            writer.transport.abort()
            return
        await asyncio.sleep(0.5)
    return handler, connections


async def test_a_stale_idle_socket_fails_before_any_byte_and_the_retry_is_fresh() -> None:
    handler, _ = closes_on_its_second_request(ok(b"first"), ok(b"fresh"))
    server, url = await serve(handler)
    client = http1(url)
    try:
        response = await client.stream("/v1/chat/completions", b"{}")
        assert await response.aread() == b"first"
        await response.aclose()
        with pytest.raises(TransportProtocolError, match="before replying"):
            await client.stream("/v1/chat/completions", b"{}")
        response = await client.stream("/v1/chat/completions", b"{}")  # dispatch's retry
        assert await response.aread() == b"fresh"
        await response.aclose()
    finally:
        await client.aclose()
        server.close()


async def test_chunked_stream_arrives_piece_by_piece_and_close_delimited_bodies_end() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    server, url = await serve(handler)
    client = http1(url)
    try:
        response = await client.stream("/v1/chat/completions", b"{}")
        pieces = [piece async for piece in response.aiter_raw()]
        assert pieces == [b"data: 1\n\n", b"data: 2\n\n"]
        await response.aclose()
        response = await client.stream("/v1/chat/completions", b"{}")
        assert await response.aread() == b"until the end"
        await response.aclose()
    finally:
        await client.aclose()
        server.close()


async def test_silence_mid_stream_is_a_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\ndata\r\n")
        await writer.drain()
        await asyncio.sleep(2)

    server, url = await serve(handler)
    client = http1(url, read=0.3)
    try:
        response = await client.stream("/v1/chat/completions", b"{}")
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"data"
        with pytest.raises(TransportTimeoutError):
            await chunks.__anext__()
        await response.discard()
    finally:
        await client.aclose()
        server.close()


async def test_the_pool_limit_makes_requests_wait_for_a_socket() -> None:
    seen: list[bytes] = []
    server, url = await serve(keep_alive_server([ok(b"r")], seen))
    client = http1(url, connections=2)
    try:
        async def one() -> bytes:
            response = await client.stream("/v1/chat/completions", b"{}")
            try:
                await asyncio.sleep(0.01)
                return await response.aread()
            finally:
                await response.aclose()

        assert await asyncio.gather(*(one() for _ in range(10))) == [b"r"] * 10
        assert seen.count(b"connection") == 2
    finally:
        await client.aclose()
        server.close()


async def test_a_large_body_is_paused_not_buffered_whole() -> None:
    size = 8 << 20

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"y" * 65536)
            await writer.drain()

    server, url = await serve(handler)
    client = http1(url)
    try:
        response = await client.stream("/v1/chat/completions", b"{}")
        total = biggest = 0
        async for piece in response.aiter_raw():
            total += len(piece)
            biggest = max(biggest, len(piece))
            await asyncio.sleep(0)  # a slow reader
        assert total == size
        assert biggest < 4 << 20  # reading stopped near the pause mark, not at the end
        await response.aclose()
    finally:
        await client.aclose()
        server.close()


def test_headers_and_urls_that_could_split_a_request_are_refused() -> None:
    with pytest.raises(ValueError):
        Http1Upstream("http://127.0.0.1:1", headers={"authorization": "x\r\nevil: 1"},
                      timeouts=Timeouts(1, 1, 1), max_connections=1)
    with pytest.raises(ValueError):
        Http1Upstream("https://example.org", headers={}, timeouts=Timeouts(1, 1, 1),
                      max_connections=1)


async def test_a_bad_path_or_header_never_reaches_the_socket() -> None:
    client = http1(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ValueError):
            await client.stream("/v1/chat completions\r\nx: y", b"{}")
        with pytest.raises(ValueError):
            await client.stream("/v1/chat/completions", b"{}", {"x-request-id": "a\r\nb: c"})
    finally:
        await client.aclose()


async def test_a_probe_on_a_socket_the_backend_just_closed_is_sent_again() -> None:
    """The keep-alive race (uvicorn closes idle sockets after 5 s, probes come every 5 s):
    a control request that found its socket closed before any reply goes out again on a
    fresh one instead of failing the probe."""
    handler, connections = closes_on_its_second_request(ok(REPLY), ok(REPLY))
    server, url = await serve(handler)
    client = http1(url)
    try:
        assert (await client.request("GET", "/health", timeout_s=2)).status_code == 200
        reply = await client.request("GET", "/health", timeout_s=2)
        assert reply.status_code == 200 and connections == [1, 2]
    finally:
        await client.aclose()
        server.close()

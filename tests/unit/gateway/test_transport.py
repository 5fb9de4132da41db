"""The aiohttp upstream against real sockets: replies, and failures in our own terms."""

from __future__ import annotations

import asyncio
import json

import pytest

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


def upstream(url: str, read: float = 5.0) -> AiohttpUpstream:
    return AiohttpUpstream(url, headers={}, timeouts=Timeouts(1.0, read, 1.0), max_connections=4)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    return await reader.readexactly(length) if length else b""


async def test_request_and_stream_round_trip() -> None:
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


async def test_refused_connection_is_a_connect_error() -> None:
    client = upstream(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TransportConnectError):
            await client.stream("/v1/chat/completions", b"{}")
        with pytest.raises(TransportConnectError):
            await client.request("GET", "/health", timeout_s=1)
    finally:
        await client.aclose()


async def test_silent_backend_is_a_timeout() -> None:
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


async def test_connection_cut_mid_body_is_a_protocol_error() -> None:
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
    client = upstream(url)
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

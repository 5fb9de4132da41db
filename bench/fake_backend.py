"""A tiny, fast fake OpenAI backend for benchmarks: raw asyncio HTTP/1.1 with keep-alive.

    python -m bench.fake_backend --port 9100 [--host 127.0.0.1] [--chunks 8]

It answers, with canned bytes and no real work, so that whatever sits in front of it is
what a benchmark measures:

- ``POST /v1/chat/completions`` (and ``/v1/completions``): one fixed OpenAI chat
  completion as JSON; with ``"stream": true`` an SSE stream (``text/event-stream``,
  chunked) of a role chunk, ``--chunks`` content chunks, a finish chunk, a usage-only
  chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``;
- ``GET /v1/models`` and ``GET /health``: a model list and ``{"status":"ok"}``;
- anything else: 404 in OpenAI's error shape.

It is an ``asyncio.Protocol`` (on uvloop when installed) that parses just enough HTTP/1.1:
the request line, headers, a ``Content-Length`` or chunked body, pipelined requests and
``Connection: close``. The request body is decoded as JSON only when it mentions
``"stream"``, so a non-streamed answer costs one header parse and one ``write``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

MODEL = "fake-upstream"
CONTENT = "Hello! I am a fake backend."

_COMPLETION = json.dumps({
    "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000,
    "model": MODEL,
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": CONTENT}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
}, separators=(",", ":")).encode()
_MODELS = json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
]}, separators=(",", ":")).encode()
_HEALTH = b'{"status":"ok"}'
_NOT_FOUND = json.dumps({"error": {"message": "no such route", "type": "not_found_error",
                                   "param": None, "code": None}}).encode()
_BAD_REQUEST = json.dumps({"error": {"message": "body is not JSON",
                                     "type": "invalid_request_error",
                                     "param": None, "code": None}}).encode()
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sse_events(chunks: int, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed answer, each ``data: …\\n\\n``, ``[DONE]`` last."""
    step = -(-len(CONTENT) // max(chunks, 1))  # ceil: the pieces concatenate to CONTENT
    pieces = [CONTENT[i * step:(i + 1) * step] for i in range(chunks)]
    payloads: list[dict[str, Any]] = [_chunk({"role": "assistant", "content": ""}, None)]
    payloads += [_chunk({"content": piece}, None) for piece in pieces]
    payloads.append(_chunk({}, "stop"))
    if include_usage:
        usage = {**_chunk({}, None), "choices": [],
                 "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens":
                           12 + chunks}}
        payloads.append(usage)
    events = [b"data: " + json.dumps(p, separators=(",", ":")).encode() + b"\n\n"
              for p in payloads]
    return [*events, b"data: [DONE]\n\n"]


def _chunked(events: list[bytes]) -> bytes:
    """``events`` in HTTP/1.1 chunked framing, one chunk per event, then the last chunk."""
    return b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    return (b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: %b\r\n\r\n%b"
            % (status, _REASONS[status], len(body), b"keep-alive" if keep_alive else b"close",
               body))


class _Answers:
    """Every response pre-rendered, per keep-alive flag."""

    def __init__(self, chunks: int) -> None:
        self.completion = {k: _response(200, _COMPLETION, k) for k in (True, False)}
        self.models = {k: _response(200, _MODELS, k) for k in (True, False)}
        self.health = {k: _response(200, _HEALTH, k) for k in (True, False)}
        self.not_found = {k: _response(404, _NOT_FOUND, k) for k in (True, False)}
        self.bad_request = {k: _response(400, _BAD_REQUEST, k) for k in (True, False)}
        self.stream = {
            (k, usage): b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
                        b"connection: %b\r\n\r\n%b"
                        % (b"keep-alive" if k else b"close", _chunked(sse_events(chunks, usage)))
            for k in (True, False) for usage in (True, False)
        }


class FakeBackendProtocol(asyncio.Protocol):
    def __init__(self, answers: _Answers) -> None:
        self.answers = answers
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            request = self._next_request()
            if request is None:
                return
            self._answer(*request)

    def _next_request(self) -> tuple[bytes, bytes, dict[bytes, bytes], bytes] | None:
        """Pop one complete request (method, path, headers, body) off the buffer."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = self.buffer[:end].split(b"\r\n")
        method, path, _ = (lines[0].split(b" ", 2) + [b"", b""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body, consumed = _dechunk(self.buffer, start)
            if body is None:
                return None
            self.buffer = self.buffer[consumed:]
        else:
            length = int(headers.get(b"content-length", b"0") or b"0")
            if len(self.buffer) < start + length:
                return None
            body = self.buffer[start:start + length]
            self.buffer = self.buffer[start + length:]
        return method, path.split(b"?", 1)[0], headers, body

    def _answer(self, method: bytes, path: bytes, headers: dict[bytes, bytes],
                body: bytes) -> None:
        assert self.transport is not None
        keep = headers.get(b"connection", b"").lower() != b"close"
        a = self.answers
        if method == b"POST" and path in (b"/v1/chat/completions", b"/v1/completions"):
            out = a.completion[keep]
            if b'"stream"' in body:
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    out = a.bad_request[keep]
                elif data.get("stream"):
                    usage = bool((data.get("stream_options") or {}).get("include_usage"))
                    out = a.stream[keep, usage]
        elif method == b"GET" and path == b"/v1/models":
            out = a.models[keep]
        elif method == b"GET" and path == b"/health":
            out = a.health[keep]
        else:
            out = a.not_found[keep]
        self.transport.write(out)
        if not keep:
            self.transport.close()


def _dechunk(buffer: bytes, start: int) -> tuple[bytes | None, int]:
    """A chunked body starting at ``start``: (body, end offset), or (None, 0) if incomplete."""
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(buffer[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None, 0
            return b"".join(parts), trailer_end + 4
        if len(buffer) < pos + size + 2:
            return None, 0
        parts.append(buffer[pos:pos + size])
        pos += size + 2


async def start_server(host: str = "127.0.0.1", port: int = 0, *,
                       chunks: int = 8) -> asyncio.Server:
    """Listen on ``host:port`` (0: a free port; read it from ``server.sockets``)."""
    answers = _Answers(chunks)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: FakeBackendProtocol(answers), host, port,
                                    backlog=1024, reuse_address=True)


async def _serve(host: str, port: int, chunks: int) -> None:
    server = await start_server(host, port, chunks=chunks)
    print(f"fake backend on http://{host}:{port} ({time.strftime('%H:%M:%S')})", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per stream")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_serve(args.host, args.port, args.chunks))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

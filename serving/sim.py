"""A simulated vLLM replica for routing benchmarks: a measuring instrument, not a product.

    python -m serving.sim --port 9001 [--capacity-blocks 2048 --block-tokens 16 --max-batch 16
        --prefill-ms-per-token 0.5 --decode-ms-per-token 20 --speed-scale 1 --name r1]

It answers the OpenAI chat API like one vLLM replica, as far as a router can tell: a reply
takes as long as its uncached prompt and its output take, reports
``usage.prompt_tokens_details.cached_tokens``, and ``/metrics`` carries vLLM's metric names.
No model runs: the replica is a clock and a prefix cache.

**Tokens.** The prompt is the messages in ChatML (``<|im_start|>{role}\\n{content}<|im_end|>\\n``
each, then ``<|im_start|>assistant\\n``), split by one regex into tokens: a ChatML marker, up to
4 word characters with an optional leading space, one other character with an optional
leading space, or one whitespace character (about one token per 3.5 characters of English).
It is prefix-stable: ``tokens(a + b) == tokens(a) + tokens(b)`` when ``a`` ends at a message
boundary, so one turn's prompt + output is a token prefix of the next turn's prompt, as with
a real tokenizer and chat template. The output is ``max_tokens`` filler words (one token
each), chosen by a hash of the prompt, so a replay gets the same text.

**Prefix cache** (vLLM's automatic prefix caching, simplified). Only full blocks of
``block_tokens`` are cached. Block i's key hashes block i-1's key with block i's tokens, so a
block is reusable only behind the same whole prefix. A request's cached tokens are its
leading run of blocks present, never the whole prompt (vLLM recomputes the last prompt token,
so a fully cached prompt reports one block less). At most ``capacity_blocks`` blocks are held,
least recently used evicted first. A prompt's full blocks are inserted when its prefill ends;
the full blocks of prompt + output when the request ends. Blocks are touched tail first, so a
shared head (a system prompt) is evicted last, as vLLM's free-block queue does. Running
requests do not pin blocks: the cache is a plain LRU, and ``vllm:kv_cache_usage_perc`` is the
blocks that running requests need (prompt + ``max_tokens``) over the capacity, vLLM's load
signal.

**Time.** A request waits in a FIFO queue until fewer than ``max_batch`` run. Running, it
queues for the replica's single prefill lane (prefill is compute-bound: a long cache miss
delays every request behind it, which is the cost cache-aware routing saves), looks up the
cache and sleeps ``uncached tokens × prefill_ms_per_token / speed_scale``; its first token is
then out. Each further token takes ``decode_ms_per_token``, in parallel for every running
request (decode is memory-bound per sequence; ``max_batch`` is the decode capacity). Streams
send the first token alone, then ``stream_chunk_tokens`` tokens per SSE event, to keep the
instrument cheap. ``speed_scale`` scales compute (prefill) only, so a replica with N× the
capacity of one started with ``--max-batch B --capacity-blocks C`` is ``--max-batch N·B
--capacity-blocks N·C --speed-scale N``: N× prefill throughput, N× concurrent decodes, N× cache,
the same per-token latency. Not modelled: chunked prefill sharing steps with decode, preemption
when the KV cache is full, step time that grows with the batch.

**Routes.** ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``; usage in the
last chunk when ``stream_options.include_usage``), ``GET /v1/models``, ``GET /health``,
``GET /metrics`` (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc``, ``vllm:prefix_cache_queries_total`` and
``vllm:prefix_cache_hits_total`` in tokens, ``vllm:prompt_tokens_total``,
``vllm:generation_tokens_total``, ``vllm:request_success_total``, and, not vLLM's,
``sim_requests_received_total``), ``POST /tokenize`` and ``POST /reset_prefix_cache`` as vLLM
has them. A request whose client disconnects is aborted (its slot and prefill freed), as
vLLM does. Reply ids are ``chatcmpl-{name}-{n}``, so a client behind a router can tell which
replica answered. The app is a bare ASGI callable (no web framework); ``main`` serves it with
uvicorn, one process per replica.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PrefixCache", "Replica", "SimApp", "render_chat", "tokenize"]

_TOKEN = re.compile(r"<\|im_start\|>|<\|im_end\|>| ?\w{1,4}| ?[^\w\s]|\s")
_FILLER = tuple(" " + w for w in (  # words of at most 4 letters: one token each with the space
    "the sea and a ship sail wind rope tide port bay fog star map deck mast crew gull reef "
    "bell cold salt wave dock oar keel").split())


def tokenize(text: str) -> list[str]:
    """The simulator's tokens of ``text`` (see the module docstring); every character counts."""
    return _TOKEN.findall(text)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: the text ones count
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def render_chat(messages: Sequence[dict[str, Any]]) -> str:
    """``messages`` in ChatML, ending with the assistant's open turn (the generation prompt)."""
    parts = [f"<|im_start|>{m.get('role', 'user')}\n{_text(m.get('content'))}<|im_end|>\n"
             for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def filler(prompt: str, n: int) -> list[str]:
    """``n`` output tokens, a function of the prompt (each filler word is exactly one token)."""
    start = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=4).digest(), "big")
    return [_FILLER[(start + 7 * i) % len(_FILLER)] for i in range(n)]


class PrefixCache:
    """Hash-chained blocks of ``block_tokens`` tokens in an LRU of ``capacity_blocks``.

    Pure bookkeeping, no clock: ``lookup`` counts (and records as a query) the cached tokens
    of a prompt, ``insert`` adds or touches the full blocks of a token sequence.
    """

    def __init__(self, capacity_blocks: int, block_tokens: int = 16) -> None:
        if capacity_blocks < 1 or block_tokens < 1:
            raise ValueError("capacity_blocks and block_tokens must be at least 1")
        self.capacity_blocks = capacity_blocks
        self.block_tokens = block_tokens
        self._blocks: OrderedDict[int, None] = OrderedDict()  # oldest first
        self.queries = 0  # prompt tokens looked up
        self.hits = 0  # of which cached

    def __len__(self) -> int:
        return len(self._blocks)

    def block_keys(self, tokens: Sequence[str]) -> list[int]:
        """One key per full block; a key depends on every token before and in its block."""
        keys, parent, size = [], 0, self.block_tokens
        for start in range(0, len(tokens) - size + 1, size):
            parent = hash((parent, *tokens[start:start + size]))
            keys.append(parent)
        return keys

    def lookup(self, tokens: Sequence[str]) -> int:
        """Cached tokens of a prompt: the leading blocks present, at most ``len - 1`` tokens."""
        matched = 0
        for key in self.block_keys(tokens[:max(len(tokens) - 1, 0)]):
            if key not in self._blocks:
                break
            matched += 1
        cached = matched * self.block_tokens
        self.queries += len(tokens)
        self.hits += cached
        return cached

    def insert(self, tokens: Sequence[str]) -> None:
        """Add or touch every full block of ``tokens``, tail first; evict down to capacity."""
        for key in reversed(self.block_keys(tokens)):
            if key in self._blocks:
                self._blocks.move_to_end(key)
            else:
                self._blocks[key] = None
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        self._blocks.clear()


@dataclass
class Generation:
    """One request's life on a replica; ``cached_tokens`` is known once its prefill started."""

    prompt: str
    prompt_tokens: list[str]
    max_tokens: int
    cached_tokens: int = 0
    output: list[str] = field(default_factory=list)


class Replica:
    """The clock of one replica: admission queue, one prefill lane, parallel decode."""

    def __init__(self, cache: PrefixCache, *, max_batch: int = 16,
                 prefill_ms_per_token: float = 0.5, decode_ms_per_token: float = 20.0,
                 speed_scale: float = 1.0, stream_chunk_tokens: int = 8) -> None:
        if max_batch < 1 or speed_scale <= 0 or stream_chunk_tokens < 1:
            raise ValueError("max_batch, speed_scale and stream_chunk_tokens must be positive")
        if prefill_ms_per_token < 0 or decode_ms_per_token < 0:
            raise ValueError("per-token times must not be negative")
        self.cache = cache
        self.max_batch = max_batch
        self.prefill_s = prefill_ms_per_token / 1000 / speed_scale
        self.decode_s = decode_ms_per_token / 1000
        self.chunk = stream_chunk_tokens
        self.running = 0
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.reserved_blocks = 0  # blocks the running requests need (kv_cache_usage_perc)
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.requests_total = 0  # finished
        self.received_total = 0  # chat requests received (not a vLLM metric: for benchmarks)
        self._prefill_lane = asyncio.Lock()  # FIFO

    @property
    def kv_usage(self) -> float:
        return min(1.0, self.reserved_blocks / self.cache.capacity_blocks)

    def new(self, messages: Sequence[dict[str, Any]], max_tokens: int) -> Generation:
        prompt = render_chat(messages)
        return Generation(prompt, tokenize(prompt), max_tokens)

    async def _admit(self) -> None:
        if self.running < self.max_batch and not self.waiting:
            self.running += 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(slot)
        try:
            await slot  # _release hands its slot over: `running` already counts us
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self._release()  # granted, then cancelled before we ran
            else:
                self.waiting.remove(slot)
            raise

    def _release(self) -> None:
        while self.waiting:
            slot = self.waiting.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self.running -= 1

    async def generate(self, gen: Generation) -> AsyncGenerator[list[str], None]:
        """Yield ``gen``'s output tokens: the first alone after prefill, then in chunks."""
        await self._admit()
        blocks = -(-(len(gen.prompt_tokens) + gen.max_tokens) // self.cache.block_tokens)
        self.reserved_blocks += blocks
        finished = False
        try:
            async with self._prefill_lane:
                gen.cached_tokens = self.cache.lookup(gen.prompt_tokens)
                self.prompt_tokens_total += len(gen.prompt_tokens)
                await asyncio.sleep((len(gen.prompt_tokens) - gen.cached_tokens) * self.prefill_s)
                self.cache.insert(gen.prompt_tokens)
            tokens = filler(gen.prompt, gen.max_tokens)
            start, done = time.monotonic(), 1
            gen.output = tokens[:1]
            self.generation_tokens_total += 1
            yield tokens[:1]
            while done < len(tokens):
                step = tokens[done:done + self.chunk]
                done += len(step)
                # absolute deadlines: a late wake-up does not push back the next chunk
                await asyncio.sleep(max(0.0, start + (done - 1) * self.decode_s - time.monotonic()))
                gen.output = tokens[:done]
                self.generation_tokens_total += len(step)
                yield step
            finished = True
        finally:
            self.reserved_blocks -= blocks
            self._release()
            if finished:
                self.requests_total += 1
                self.cache.insert(gen.prompt_tokens + gen.output)


Send = Callable[[dict[str, Any]], Awaitable[None]]


def _error(status: int, message: str) -> tuple[int, bytes]:
    kind = "invalid_request_error" if status == 400 else "not_found_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return status, json.dumps(body).encode()


class SimApp:
    """The replica's HTTP face, a bare ASGI app (no framework: serving stays a library)."""

    def __init__(self, replica: Replica, *, model: str = "sim", name: str = "sim",
                 max_model_len: int = 131072) -> None:
        self.replica = replica
        self.model = model
        self.name = name
        self.max_model_len = max_model_len
        self._ids = 0

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        route = (scope["method"], scope["path"])
        if route == ("POST", "/v1/chat/completions"):
            await _until_disconnect(self._chat(body, send), receive)
            return
        if route == ("GET", "/health"):
            status, payload, ctype = 200, b"", "text/plain"
        elif route == ("GET", "/v1/models"):
            status, ctype = 200, "application/json"
            payload = json.dumps({"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "sim",
                 "max_model_len": self.max_model_len}]}).encode()
        elif route == ("GET", "/metrics"):
            status, payload, ctype = 200, self.metrics().encode(), "text/plain; version=0.0.4"
        elif route == ("POST", "/reset_prefix_cache"):
            self.replica.cache.clear()
            status, payload, ctype = 200, b"", "text/plain"
        elif route == ("POST", "/tokenize"):
            status, payload, ctype = *self._tokenize(body), "application/json"
        else:
            status, payload = _error(404, f"no route {scope['method']} {scope['path']}")
            ctype = "application/json"
        await _respond(send, status, payload, ctype)

    def _tokenize(self, body: bytes) -> tuple[int, bytes]:
        try:
            data = json.loads(body)
            text = render_chat(data["messages"]) if "messages" in data else str(data["prompt"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "expected a JSON object with `prompt` or `messages`")
        ids = [hash(t) & 0xFFFF for t in tokenize(text)]
        return 200, json.dumps({"count": len(ids), "max_model_len": self.max_model_len,
                                "tokens": ids}).encode()

    def metrics(self) -> str:
        r, c = self.replica, self.replica.cache
        labels = f'{{engine="0",model_name="{self.model}"}}'
        rows = [
            ("num_requests_running", "gauge", r.running),
            ("num_requests_waiting", "gauge", len(r.waiting)),
            ("kv_cache_usage_perc", "gauge", r.kv_usage),
            ("prefix_cache_queries_total", "counter", c.queries),
            ("prefix_cache_hits_total", "counter", c.hits),
            ("prompt_tokens_total", "counter", r.prompt_tokens_total),
            ("generation_tokens_total", "counter", r.generation_tokens_total),
        ]
        lines = []
        for name, kind, value in rows:
            lines += [f"# TYPE vllm:{name} {kind}", f"vllm:{name}{labels} {float(value)}"]
        lines += ["# TYPE vllm:request_success_total counter",
                  f'vllm:request_success_total{{engine="0",finished_reason="length",'
                  f'model_name="{self.model}"}} {float(r.requests_total)}']
        lines += ["# TYPE sim_requests_received_total counter",
                  f"sim_requests_received_total{labels} {float(r.received_total)}"]
        return "\n".join(lines) + "\n"

    async def _chat(self, body: bytes, send: Send) -> None:
        try:
            data = json.loads(body)
            messages = data["messages"]
            max_tokens = int(data.get("max_completion_tokens") or data.get("max_tokens") or 16)
            if not isinstance(messages, list) or not messages or max_tokens < 1:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            await _respond(send, *_error(400, "expected `messages` (a non-empty list) and a "
                                              "positive `max_tokens`"), "application/json")
            return
        self._ids += 1
        self.replica.received_total += 1
        rid, created = f"chatcmpl-{self.name}-{self._ids}", int(time.time())
        gen = self.replica.new(messages, max_tokens)
        async with aclosing(self.replica.generate(gen)) as pieces:  # frees the slot if cancelled
            await self._reply(rid, created, gen, pieces, data, send)

    async def _reply(self, rid: str, created: int, gen: Generation,
                     pieces: AsyncIterator[list[str]], data: dict[str, Any], send: Send) -> None:
        if not data.get("stream"):
            async for _ in pieces:
                pass
            reply = {"id": rid, "object": "chat.completion", "created": created,
                     "model": self.model, "choices": [{
                         "index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": "".join(gen.output)}}],
                     "usage": _usage(gen)}
            await _respond(send, 200, json.dumps(reply).encode(), "application/json")
            return
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))

        def event(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {"type": "http.response.body", "more_body": True, "body": b"data: " + json.dumps(
                {"id": rid, "object": "chat.completion.chunk", "created": created,
                 "model": self.model, "choices": choices, **extra}).encode() + b"\n\n"}

        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        first = True
        async for piece in pieces:
            delta = {"content": "".join(piece)}
            if first:
                delta, first = {"role": "assistant", **delta}, False
            await send(event([{"index": 0, "delta": delta, "finish_reason": None}]))
        await send(event([{"index": 0, "delta": {}, "finish_reason": "length"}]))
        if include_usage:
            await send(event([], usage=_usage(gen)))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _until_disconnect(work: Awaitable[None], receive: Callable[[], Awaitable[Any]]) -> None:
    """Run ``work`` but cancel it when the client goes away, as vLLM aborts such requests
    (uvicorn does not cancel the app; it only drops what the app still sends)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(receive())  # the body is read: the next event is disconnect
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watch):
            pending.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    error = task.exception() if task.done() and not task.cancelled() else None
    if error is not None:
        raise error


def _usage(gen: Generation) -> dict[str, Any]:
    prompt, out = len(gen.prompt_tokens), len(gen.output)
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": gen.cached_tokens}}


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="sim", help="the model name it serves")
    parser.add_argument("--name", help="replica name in reply ids (default sim-PORT)")
    parser.add_argument("--capacity-blocks", type=int, default=2048)
    parser.add_argument("--block-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--prefill-ms-per-token", type=float, default=0.5)
    parser.add_argument("--decode-ms-per-token", type=float, default=20.0)
    parser.add_argument("--speed-scale", type=float, default=1.0,
                        help="prefill (compute) speed multiplier")
    parser.add_argument("--stream-chunk-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    import uvicorn  # only the command line serves; importing the module stays light

    replica = Replica(PrefixCache(args.capacity_blocks, args.block_tokens),
                      max_batch=args.max_batch, prefill_ms_per_token=args.prefill_ms_per_token,
                      decode_ms_per_token=args.decode_ms_per_token,
                      speed_scale=args.speed_scale, stream_chunk_tokens=args.stream_chunk_tokens)
    app = SimApp(replica, model=args.model, name=args.name or f"sim-{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                lifespan="off", timeout_keep_alive=30)


if __name__ == "__main__":
    main()

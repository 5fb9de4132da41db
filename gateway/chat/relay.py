"""Relay one OpenAI request to a backend: JSON whole, SSE event by event.

The stream is passed through as the backend's own bytes, one complete SSE event at a
time (no buffering beyond the current event). Only three things are touched: the
``model`` field is rewritten to the public name, a usage-only chunk the client did not ask
for is dropped (we always ask the backend for usage, for metrics), and ``[DONE]`` is
added if the backend forgot it. A failure after the first byte ends the stream with one
SSE error event.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from gateway.backends import UpstreamReply, dispatch
from gateway.backends.backend import Target
from gateway.backends.pool import ModelRoute
from gateway.backends.transport import UpstreamError, UpstreamTimeoutError
from gateway.context import RequestContext
from gateway.conversations.service import ChatTurn
from gateway.errors import BadGatewayError, GatewayError
from gateway.errors import UpstreamTimeoutError as UpstreamTimeout
from gateway.metrics import Metrics
from gateway.routing import RoutingRequest
from gateway.schemas import GATEWAY_FIELDS
from gateway.settings import BackendKind, PoolConfig

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = b"data: [DONE]\n\n"


class Proxy:
    def __init__(self, pool_config: PoolConfig, metrics: Metrics) -> None:
        self.pool_config = pool_config
        self.metrics = metrics

    async def forward(
        self,
        ctx: RequestContext,
        route: ModelRoute,
        path: str,
        data: dict[str, Any],
        *,
        openai_params: frozenset[str],
        routing: RoutingRequest,
        turn: ChatTurn | None = None,
        extras: dict[str, Any] | None = None,
    ) -> Response:
        """Send ``data`` (the client's JSON) to a backend of ``route``; return the reply.

        With a conversation ``turn``, the reply is committed to it once it finished, and
        the turn is released (its lock freed) on every path, streamed or not.
        """
        try:
            stream = bool(data.get("stream"))
            client_wants_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            payload = {k: v for k, v in data.items() if k not in GATEWAY_FIELDS}
            if stream:
                payload["stream_options"] = {**(data.get("stream_options") or {}),
                                             "include_usage": True}
            ctx.model, ctx.stream = route.name, stream

            def shape(target: Target) -> dict[str, Any]:
                if target.backend.kind is BackendKind.OPENAI:
                    return {k: v for k, v in payload.items() if k in openai_params}
                return payload

            # llama-cpp-python answers 400 to an X-Request-Id that is not a UUID: forward
            # the id only in that form (it is still echoed to the client whatever it is)
            forwarded = {"x-request-id": ctx.request_id} if _UUID.match(ctx.request_id) else None
            reply = await dispatch(
                route, path, shape, stream=stream, request=routing, config=self.pool_config,
                headers=forwarded,
            )
            ctx.backend, ctx.attempts = reply.backend.name, reply.attempts
            if reply.attempts > 1:
                self.metrics.retries.labels(route.name).inc(reply.attempts - 1)
            headers = {"x-ragate-backend": reply.backend.name}
            if turn is not None:
                headers.update(turn.headers())
            if not stream:
                response = self._json_reply(ctx, reply, headers, extras)
                self.feedback(route, ctx)
                if turn is not None:
                    await self._commit_json(turn, response.body)
                    await turn.release()
                return response
            relay = SseRelay(ctx, reply, self.metrics, client_wants_usage, turn,
                             on_usage=lambda: self.feedback(route, ctx), extras=extras)
            return RelayResponse(relay.events(), relay.close, media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **headers})
        except BaseException:
            if turn is not None:
                await turn.release()
            raise

    def feedback(self, route: ModelRoute, ctx: RequestContext) -> None:
        """Tell a cache-aware policy what the backend reported it had cached."""
        feedback = getattr(route.policy, "feedback", None)
        if feedback is None or ctx.cached_tokens is None or not ctx.prompt_tokens:
            return
        predicted = feedback(ctx.request_id, ctx.cached_tokens, ctx.prompt_tokens)
        if predicted is not None:
            self.metrics.route_predicted_cached.labels(route.name).inc(
                predicted * ctx.prompt_tokens)
            self.metrics.route_reported_cached.labels(route.name).inc(ctx.cached_tokens)

    def _json_reply(self, ctx: RequestContext, reply: UpstreamReply,
                    headers: dict[str, str], extras: dict[str, Any] | None = None) -> Response:
        try:
            body = json.loads(reply.body)
        except ValueError as exc:
            raise BadGatewayError(f"backend {ctx.backend} sent a reply that is not JSON") from exc
        if isinstance(body, dict):
            if "model" in body:
                body["model"] = ctx.model
            if extras:
                body["ragate"] = extras
            record_usage(ctx, self.metrics, body.get("usage"), body.get("timings"))
            ttft = ctx.elapsed()  # no stream: the first token arrives with the last
            self.metrics.ttft.labels(ctx.model, ctx.backend).observe(ttft)
            ctx.ttft_s = ttft
        return Response(json.dumps(body, ensure_ascii=False), status_code=reply.status_code,
                        media_type="application/json", headers=headers)

    async def _commit_json(self, turn: ChatTurn, raw: bytes | memoryview) -> None:
        body = json.loads(bytes(raw))
        try:
            message = body["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BadGatewayError("backend reply has no message to store") from exc
        await turn.commit(_stored_reply(message))


def _stored_reply(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as it will be replayed in later prompts."""
    return _assistant(message.get("content"), message.get("tool_calls"))


def _assistant(content: str | None, tool_calls: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An assistant message every backend accepts back: content may be null only beside
    tool calls (llama.cpp rejects an empty assistant message with null content)."""
    if tool_calls:
        return {"role": "assistant", "content": content or None, "tool_calls": tool_calls}
    return {"role": "assistant", "content": content or ""}


class RelayResponse(StreamingResponse):
    """A stream that runs ``on_close`` however it ends: finished, failed, or never started
    because the client left first (a generator that never ran has no ``finally``)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]],
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close()


def record_usage(ctx: RequestContext, metrics: Metrics, usage: Any, timings: Any = None) -> None:
    """Tokens in/out, and cached prompt tokens from ``usage.prompt_tokens_details`` or
    llama.cpp's ``timings.cache_n``."""
    model, backend = ctx.model or "", ctx.backend or ""
    if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
        ctx.cached_tokens = timings["cache_n"]
        metrics.cached_tokens.labels(model, backend).inc(timings["cache_n"])
    if not isinstance(usage, dict):
        return
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int):
        ctx.prompt_tokens = prompt
        metrics.tokens.labels(model, "in").inc(prompt)
    if isinstance(completion, int):
        ctx.completion_tokens = completion
        metrics.tokens.labels(model, "out").inc(completion)
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int):
        ctx.cached_tokens = cached
        metrics.cached_tokens.labels(model, backend).inc(cached)


def _split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events (with their terminator) and the incomplete rest.

    sse-starlette (llama-cpp-python) ends events with CRLF CRLF, vLLM and SGLang with LF LF.
    """
    events: list[bytes] = []
    start = 0
    while True:
        lf = buffer.find(b"\n\n", start)
        crlf = buffer.find(b"\r\n\r\n", start)
        if lf < 0 and crlf < 0:
            return events, buffer[start:]
        if crlf >= 0 and (lf < 0 or crlf < lf):
            end = crlf + 4
        else:
            end = lf + 2
        events.append(buffer[start:end])
        start = end


def _data_of(event: bytes) -> bytes | None:
    """The payload of an event's ``data:`` line(s); None for comments and pings."""
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].lstrip(b" ") for line in lines)


class SseRelay:
    def __init__(self, ctx: RequestContext, reply: UpstreamReply, metrics: Metrics,
                 client_wants_usage: bool, turn: ChatTurn | None = None,
                 on_usage: Callable[[], None] | None = None,
                 extras: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.extras = extras
        self.on_usage = on_usage
        self.reply = reply
        self.metrics = metrics
        self.client_wants_usage = client_wants_usage
        self.turn = turn
        self.reply_text = ReplyAccumulator() if turn is not None else None
        self.failed = False
        upstream = reply.target.request_model
        public = ctx.model or upstream
        self._renames: list[tuple[bytes, bytes]] = []
        if upstream != public:
            for sep in (b":", b": "):
                self._renames.append((
                    b'"model"' + sep + json.dumps(upstream).encode(),
                    b'"model"' + sep + json.dumps(public).encode(),
                ))
        self.saw_done = False
        self.saw_finish = False
        self.reply_id: str | None = None

    async def events(self) -> AsyncIterator[bytes]:
        try:
            buffer = self.reply.body
            chunks = self.reply.chunks
            assert chunks is not None
            while not self.saw_done:
                events, buffer = _split_events(buffer)
                for event in events:
                    if _data_of(event) == b"[DONE]":
                        self.saw_done = True
                        break
                    out = self._inspect(event)
                    if out:
                        yield out
                if self.saw_done:
                    break
                try:
                    buffer += await chunks.__anext__()
                except StopAsyncIteration:
                    if buffer.strip():
                        buffer += b"\n\n"
                        continue
                    break
            if self.on_usage is not None:
                self.on_usage()
            if not (self.saw_finish or self.saw_done):
                yield self._fail(BadGatewayError(
                    f"backend {self.ctx.backend} closed the stream before it finished"))
                return
            # the reply is complete: store it before [DONE], so a client that sends its
            # next message at once finds this turn (the lock holds it back meanwhile)
            if self.turn is not None and self.reply_text is not None:
                try:
                    await self.turn.commit(self.reply_text.message())
                except GatewayError as exc:
                    yield self._fail(exc)
                    return
            if self.extras:
                # one extra chunk before [DONE], shaped like a chunk with no choices so
                # OpenAI SDKs pass it through: {"ragate": {"sources": [...]}}
                yield b"data: " + json.dumps({
                    "id": self.reply_id, "object": "chat.completion.chunk",
                    "model": self.ctx.model, "choices": [], "ragate": self.extras,
                }, ensure_ascii=False).encode() + b"\n\n"
            yield DONE
        except UpstreamTimeoutError as exc:
            yield self._fail(UpstreamTimeout(
                f"backend {self.ctx.backend} went silent mid-stream ({exc})"))
        except UpstreamError as exc:
            yield self._fail(BadGatewayError(
                f"backend {self.ctx.backend} failed mid-stream: {exc}"))

    async def close(self) -> None:
        """Free the backend and the conversation lock (RelayResponse calls this once)."""
        await self.reply.close(failed=self.failed, drain=self.saw_done and not self.failed)
        if self.turn is not None:
            await self.turn.release()

    def _fail(self, error: GatewayError) -> bytes:
        self.failed = True
        self.ctx.error = error.message
        self.metrics.stream_errors.labels(self.ctx.model or "", self.ctx.backend or "").inc()
        return error.to_sse()

    def _inspect(self, event: bytes) -> bytes | None:
        data = _data_of(event)
        if data is None:
            return event  # comment / ping: pass through
        if self.reply_text is not None:
            self.reply_text.add(data)
        if self.reply_id is None and self.extras and data.startswith(b"{"):
            try:
                self.reply_id = json.loads(data).get("id")
            except ValueError:
                pass
        if self.ctx.ttft_s is None and _has_text(data):
            self.ctx.ttft_s = self.ctx.elapsed()
            self.metrics.ttft.labels(self.ctx.model, self.ctx.backend).observe(self.ctx.ttft_s)
        if not self.saw_finish and b'"finish_reason"' in data and not _null_finish(data):
            self.saw_finish = True
        if b'"usage"' in data and not _null_usage(data):
            try:
                chunk = json.loads(data)
            except ValueError:
                chunk = None
            if isinstance(chunk, dict):
                record_usage(self.ctx, self.metrics, chunk.get("usage"), chunk.get("timings"))
                if not self.client_wants_usage and not chunk.get("choices"):
                    return None  # the usage chunk we asked for on our own behalf
        for old, new in self._renames:
            event = event.replace(old, new)
        return event


class ReplyAccumulator:
    """Rebuilds the assistant message (choice 0) from stream deltas, tool calls included."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}

    def add(self, data: bytes) -> None:
        try:
            chunk = json.loads(data)
        except ValueError:
            return
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = self.tool_calls.setdefault(call.get("index", 0), {
                    "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""

    def message(self) -> dict[str, Any]:
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return _assistant("".join(self.content), calls or None)


def _has_text(data: bytes) -> bool:
    # cheap pre-check before parsing: role-only and empty deltas carry no generated text
    if b'"content"' not in data and b'"text"' not in data:
        return False
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    if not isinstance(chunk, dict):
        return False
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
            return True
    return False


def _null_finish(data: bytes) -> bool:
    return b'"finish_reason":null' in data or b'"finish_reason": null' in data


def _null_usage(data: bytes) -> bool:
    return b'"usage":null' in data or b'"usage": null' in data



"""Step 7: relay the backend's reply to the client, JSON whole or SSE event by event.

The stream is passed through as the backend's own bytes, one complete SSE event at a
time (no buffering beyond the current event). Only these things are touched: ``model`` is
rewritten to the public name; a usage-only chunk the client did not ask for is dropped (we
always ask the backend for usage); when the backend sent no usage, ours is added (as
OpenAI's usage chunk, when the client asked for one); the sources chunk goes before
``[DONE]``, which is added if a backend that finished forgot it. A failure after the first
byte ends the stream with one SSE error event.

The relay knows nothing of conversations: it takes ``RelayHooks``. ``on_complete`` gets
the assistant message once the reply finished (before ``[DONE]``, so a client that sends
its next message at once finds the turn stored); ``on_interrupt`` gets the partial message
when the stream ended any other way (client gone, backend failed); ``on_close`` runs last,
once, however the response ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from gateway import wire
from gateway.backends import UpstreamReply
from gateway.backends.transport import TransportError, TransportTimeoutError
from gateway.chat.conform import (
    StreamConformer,
    conform_reply,
    conform_tool_calls,
    conform_usage,
)
from gateway.chat.limits import CountText, LengthGuard, ReplyLimits, limit_reply, single_tool_call
from gateway.chat.usage import Usage, account, reported
from gateway.context import RequestContext
from gateway.errors import BadGatewayError, GatewayError, UpstreamTimeoutError
from gateway.metrics import Metrics

log = logging.getLogger("ragate.relay")
Message = dict[str, Any]
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = b"data: [DONE]\n\n"


async def _nothing(*_: Any) -> None:
    return None


@dataclass
class RelayHooks:
    # our count when the backend reports none: (reply text) -> usage
    count_usage: Callable[[str], Awaitable[Usage]]
    on_complete: Callable[[Message], Awaitable[None]] | None = None  # None: nothing to keep
    on_interrupt: Callable[[Message], Awaitable[None]] = _nothing
    on_close: Callable[[], Awaitable[None]] = _nothing
    on_usage: Callable[[], None] = lambda: None  # usage known: routing feedback
    extras: dict[str, Any] | None = None  # {"sources": [...]} for the client
    limits: ReplyLimits = ReplyLimits()  # the client's, kept whatever the engine did
    count_text: CountText | None = None  # tokens of a text, to cut a reply at the limit
    choices: int = 1  # the client's n


# -- JSON -----------------------------------------------------------------------------------


async def relay_json(ctx: RequestContext, reply: UpstreamReply, metrics: Metrics,
                     hooks: RelayHooks, headers: dict[str, str]) -> tuple[Response, Message]:
    """The client's response and the assistant message (choice 0) it carries."""
    try:
        body = wire.loads(reply.body)
    except ValueError as exc:
        raise BadGatewayError(f"backend {ctx.backend} sent a reply that is not JSON") from exc
    if not isinstance(body, dict):
        raise BadGatewayError(f"backend {ctx.backend} sent a reply that is not an object")
    if "model" in body:
        body["model"] = ctx.model
    conform_reply(body, _object_of(ctx))
    usage = reported(body.get("usage"), body.get("timings"))
    if usage is None:
        usage = await hooks.count_usage(_text_of(body))
    if hooks.count_text is not None:
        usage = await limit_reply(body, usage, hooks.limits, hooks.count_text)
    body["usage"] = conform_usage(body.get("usage"), usage)
    message = _message_of(body)
    account(ctx, metrics, usage)
    hooks.on_usage()
    if hooks.extras:
        body["ragate"] = hooks.extras
    ctx.ttft_s = ctx.elapsed()  # no stream: the first token arrives with the last
    metrics.ttft.labels(ctx.model, ctx.backend).observe(ctx.ttft_s)
    response = Response(wire.dumps(body), status_code=reply.status_code,
                        media_type="application/json", headers=headers)
    return response, message


def _object_of(ctx: RequestContext) -> str:
    return "text_completion" if ctx.path == "/v1/completions" else "chat.completion"


def _message_of(body: dict[str, Any]) -> Message:
    try:
        message = body["choices"][0].get("message") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        message = {}
    return assistant_message(message.get("content"), message.get("tool_calls"))


def _text_of(body: dict[str, Any]) -> str:
    parts = []
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            parts.append(str(message.get("content") or choice.get("text") or ""))
            for call in message.get("tool_calls") or []:
                parts.append(json.dumps(call.get("function") or {}, ensure_ascii=False))
    return "".join(parts)


def assistant_message(content: str | None, tool_calls: list[Message] | None) -> Message:
    """An assistant message every backend takes back: tool calls carry ids, and content is
    null only beside tool calls (a kind that refuses null gets "" from its dialect)."""
    if tool_calls:
        return {"role": "assistant", "content": content or None,
                "tool_calls": conform_tool_calls(tool_calls)}
    return {"role": "assistant", "content": content or ""}


# -- SSE ------------------------------------------------------------------------------------


class RelayResponse(StreamingResponse):
    """A stream that runs ``on_close`` however it ends: finished, failed, or never started
    because the client left first (a generator that never ran has no ``finally``).

    Its own send loop, for two costs Starlette's has per stream: a task group with a
    cancel scope to notice a disconnect (here one plain task, which cancels the stream
    only while it is still being sent), and a last empty body message (here the
    relay's last bytes carry ``more_body: False``: ``SseRelay.ending``)."""

    def __init__(self, relay: SseRelay, **kwargs: Any) -> None:
        super().__init__(relay.events(), **kwargs)
        self._relay = relay

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        sending = True
        left = False

        async def listen() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            if sending:  # the stream is suspended at one of its awaits: cancel it there
                left = True
                assert task is not None
                task.cancel()

        listener = asyncio.ensure_future(listen())
        try:
            await self._send_all(send)
        except asyncio.CancelledError:
            if not left:
                raise
            assert task is not None
            task.uncancel()  # ours, and handled: later awaits of this task are not cancelled
        finally:
            sending = False
            listener.cancel()
            with anyio.CancelScope(shield=True):
                await self._relay.close()

    async def _send_all(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        ended = False
        async for chunk in self.body_iterator:
            ended = self._relay.ending
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def relay_stream(ctx: RequestContext, reply: UpstreamReply, metrics: Metrics,
                 hooks: RelayHooks, headers: dict[str, str], *,
                 client_wants_usage: bool) -> Response:
    relay = SseRelay(ctx, reply, metrics, hooks, client_wants_usage)
    return RelayResponse(relay, media_type="text/event-stream",
                         headers={**SSE_HEADERS, **headers})


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
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
                 hooks: RelayHooks, client_wants_usage: bool) -> None:
        self.ctx = ctx
        self.reply = reply
        self.metrics = metrics
        self.hooks = hooks
        self.client_wants_usage = client_wants_usage
        self.deltas = DeltaLog()
        self.usage: Usage | None = None
        self.failed = False
        self.completed = False  # on_complete ran: the turn is the backend's whole reply
        self.saw_done = False
        self.saw_finish = False
        self.ending = False  # the bytes being yielded are the stream's last
        self.reply_id: str | None = None
        self.created: int | None = None
        self.conformer = StreamConformer()
        limit = hooks.limits.max_tokens
        self.guard = LengthGuard(limit) if limit is not None else None
        self.finished: set[int] = set()  # choices that sent their finish_reason
        self.enough = False  # every choice finished or was cut: stop reading
        upstream = reply.target.request_model
        public = ctx.model or upstream
        self._renames: list[tuple[bytes, bytes]] = []
        if upstream != public:
            for sep in (b":", b": "):
                self._renames.append((
                    b'"model"' + sep + json.dumps(upstream).encode(),
                    b'"model"' + sep + json.dumps(public).encode(),
                ))

    async def events(self) -> AsyncIterator[bytes]:
        tail: list[bytes] = []  # the last read's events go out with the closing chunks
        try:
            async for events, last in self._backend_events():
                # the events of one backend read go out in one write: they arrived
                # together, and a write per event was the stream's largest cost
                outs = [out for out in map(self._inspect, events) if out]
                if last:
                    self.saw_done = not self.enough  # else [DONE] came after our cut
                    tail = outs
                elif outs:
                    yield outs[0] if len(outs) == 1 else b"".join(outs)
            if not (self.saw_finish or self.saw_done):
                yield self._last(b"".join([*tail, self._fail(BadGatewayError(
                    f"backend {self.ctx.backend} closed the stream before it finished"))]))
                return
            counted = await self._settle_usage()
            try:
                if self.hooks.on_complete is not None:  # else the reply is not parsed again
                    await self.hooks.on_complete(self.deltas.message())
            except GatewayError as exc:
                yield self._last(b"".join([*tail, self._fail(exc)]))
                return
            self.completed = True
            if self.hooks.extras:
                # one extra chunk before [DONE], shaped like a chunk with no choices so
                # OpenAI SDKs pass it through: {"ragate": {"sources": [...]}}
                tail.append(self._chunk({"ragate": self.hooks.extras}))
            if counted is not None and self.client_wants_usage:
                tail.append(self._chunk({"usage": counted.to_api()}))
            tail.append(DONE)
            yield self._last(b"".join(tail))
        except TransportTimeoutError as exc:
            yield self._last(self._fail(UpstreamTimeoutError(
                f"backend {self.ctx.backend} went silent mid-stream ({exc})")))
        except TransportError as exc:
            yield self._last(self._fail(BadGatewayError(
                f"backend {self.ctx.backend} failed mid-stream: {exc}")))

    def _last(self, data: bytes) -> bytes:
        self.ending = True
        return data

    async def _backend_events(self) -> AsyncIterator[tuple[list[bytes], bool]]:
        """The backend's events up to (without) ``[DONE]``, those of each read together,
        and whether ``[DONE]`` ended them. ``_inspect`` sets ``enough`` (cut at the
        client's limit): what follows in the read it drops itself; the rest is not read."""
        buffer, chunks = self.reply.body, self.reply.chunks
        assert chunks is not None
        while True:
            events, buffer = split_events(buffer)
            for i, event in enumerate(events):
                if _data_of(event) == b"[DONE]":
                    yield events[:i], True
                    return
            if events:
                yield events, False
                if self.enough:
                    return
            try:
                buffer += await chunks.__anext__()
            except StopAsyncIteration:
                if not buffer.strip():
                    return
                buffer += b"\n\n"  # a last event without its blank line

    async def _settle_usage(self) -> Usage | None:
        """Our count when the backend sent none (returned, to be sent to the client)."""
        if self.usage is not None:
            return None
        self.usage = await self.hooks.count_usage(self.deltas.text())
        account(self.ctx, self.metrics, self.usage)
        self.hooks.on_usage()
        return self.usage

    async def close(self) -> None:
        """Record an interrupted reply, free the backend, then the caller's ``on_close``
        (RelayResponse calls this once, shielded from cancellation)."""
        try:
            if not self.completed:
                if self.usage is None:
                    await self._settle_usage()
                await self.hooks.on_interrupt(self.deltas.partial())
        except GatewayError as exc:  # the store is down: the client has its answer already
            log.warning("could not record the interrupted reply of %s: %s",
                        self.ctx.request_id, exc.message)
        finally:
            try:
                await self.reply.close(failed=self.failed,
                                       drain=self.saw_done and not self.failed)
            finally:
                await self.hooks.on_close()

    def _chunk(self, fields: dict[str, Any]) -> bytes:
        kind = "text_completion" if self.ctx.path == "/v1/completions" else (
            "chat.completion.chunk")
        chunk = {"id": self.reply_id, "object": kind,
                 "created": self.created, "model": self.ctx.model, "choices": [], **fields}
        return b"data: " + wire.dumps(chunk) + b"\n\n"

    def _fail(self, error: GatewayError) -> bytes:
        self.failed = True
        self.ctx.error = error.message
        self.metrics.stream_errors.labels(self.ctx.model or "", self.ctx.backend or "").inc()
        return error.to_sse()

    def _inspect(self, event: bytes) -> bytes | None:
        if self.enough:
            return None  # after the cut at the client's limit, in the same read
        data = _data_of(event)
        if data is None:
            return event  # comment / ping: pass through
        cut: list[int] = []
        chunk: Any = None  # the event parsed, at most once, only when something needs it
        if self._must_parse(data):
            chunk = _loads(data)
            if chunk is not None:
                had_choices = bool(chunk.get("choices"))
                changed, cut = self._conform(chunk)
                if had_choices and not chunk.get("choices"):
                    return self._finish(cut)  # only text past the limit: not sent
                if changed:
                    data = wire.dumps(chunk)
                    event = b"data: " + data + b"\n\n"
        if b'"delta"' in data or b'"text"' in data:
            self.deltas.add(data)
        if self.reply_id is None and data.startswith(b"{"):
            self._remember_ids(data)
        if self.ctx.ttft_s is None and _has_text(data):
            self.ctx.ttft_s = self.ctx.elapsed()
            self.metrics.ttft.labels(self.ctx.model, self.ctx.backend).observe(self.ctx.ttft_s)
        if b'"finish_reason"' in data and not _null_finish(data):
            self.saw_finish = True
            if self.guard is not None:  # which choices are done: only a cut needs to know
                chunk = chunk if chunk is not None else _loads(data)
                self._note_finished(chunk)
        if b'"usage"' in data and not _null_usage(data):
            chunk = chunk if chunk is not None else _loads(data)
            if chunk is not None:
                usage = reported(chunk.get("usage"), chunk.get("timings"))
                if usage is not None and self.usage is None:
                    self.usage = usage
                    account(self.ctx, self.metrics, usage)
                    self.hooks.on_usage()
                if not self.client_wants_usage and not chunk.get("choices"):
                    return self._finish(cut) or None  # the usage chunk we asked for
        for old, new in self._renames:
            event = event.replace(old, new)
        return event + (self._finish(cut) or b"")

    def _must_parse(self, data: bytes) -> bool:
        """Most chunks pass as the engine's bytes; these need looking into."""
        guard = self.guard
        if guard is not None and guard.exceeded_events():
            if guard.counts is None:
                guard.start_counting(self.deltas.chunks)
            return True
        return self.conformer.needs_look(data)

    def _conform(self, chunk: dict[str, Any]) -> tuple[bool, list[int]]:
        """(whether the chunk changed, the choices it took over the length limit)."""
        cut: list[int] = []
        changed = False
        if self.guard is not None and self.guard.counts is not None:
            before = len(chunk.get("choices") or [])
            cut = self.guard.admit(chunk)
            changed = len(chunk.get("choices") or []) != before
        if self.hooks.limits.single_tool_call:
            changed = single_tool_call(chunk) or changed
        return self.conformer.conform(chunk) or changed, cut

    def _note_finished(self, chunk: dict[str, Any] | None) -> None:
        for choice in (chunk or {}).get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason") is not None:
                self.finished.add(choice.get("index", 0))

    def _finish(self, cut: list[int]) -> bytes | None:
        """The "length" finish for choices the limit just cut; once no choice is left
        generating, the stream stops reading the engine."""
        if not cut:
            return None
        self.saw_finish = True
        self.finished.update(cut)
        if len(self.finished) >= self.hooks.choices:
            self.enough = True
        legacy = self.ctx.path == "/v1/completions"
        return b"".join(self._chunk({"choices": [
            {"index": i, "text": "", "finish_reason": "length"} if legacy else
            {"index": i, "delta": {}, "finish_reason": "length"}]}) for i in cut)

    def _remember_ids(self, data: bytes) -> None:
        try:
            chunk = wire.loads(data)
        except ValueError:
            return
        if isinstance(chunk, dict):
            self.reply_id = chunk.get("id")
            self.created = chunk.get("created")


class DeltaLog:
    """The stream's delta chunks, kept as the backend's bytes and parsed only when the
    assistant message or its text is asked for (at the end, once): the hot path pays one
    list append per chunk."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def add(self, data: bytes) -> None:
        self.chunks.append(data)

    def _parse(self) -> tuple[str, list[Message]]:
        content: list[str] = []
        calls: dict[int, Message] = {}
        for data in self.chunks:
            try:
                chunk = wire.loads(data)
            except ValueError:
                continue
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            for choice in choices or []:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content") or choice.get("text")  # chat, or legacy
                if text:
                    content.append(str(text))
                for call in delta.get("tool_calls") or []:
                    slot = calls.setdefault(call.get("index", 0), {
                        "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                    if call.get("id"):
                        slot["id"] = call["id"]
                    function = call.get("function") or {}
                    slot["function"]["name"] += function.get("name") or ""
                    slot["function"]["arguments"] += function.get("arguments") or ""
        return "".join(content), [calls[i] for i in sorted(calls)]

    def message(self) -> Message:
        content, calls = self._parse()
        return assistant_message(content, calls or None)

    def partial(self) -> Message:
        """What the user saw of a reply that was cut off: its text, no tool calls."""
        return assistant_message(self._parse()[0], None)

    def text(self) -> str:
        content, calls = self._parse()
        return content + "".join(json.dumps(c["function"], ensure_ascii=False) for c in calls)


def _loads(data: bytes) -> dict[str, Any] | None:
    """A chunk's JSON object, or None when it is not one."""
    try:
        chunk = wire.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _has_text(data: bytes) -> bool:
    # cheap pre-check before parsing: role-only and empty deltas carry no generated text
    if b'"content"' not in data and b'"text"' not in data:
        return False
    try:
        chunk = wire.loads(data)
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

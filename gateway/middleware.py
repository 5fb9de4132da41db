"""Pure ASGI middleware: request id, body-size limit and the one log line per request.

Pure ASGI rather than BaseHTTPMiddleware, which would buffer streamed responses.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import RequestContext
from gateway.errors import GatewayError, PayloadTooLargeError
from gateway.json_body import parse_json_body
from gateway.metrics import Metrics

log = logging.getLogger("ragate.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics,
                 max_upload_bytes: int | None = None,
                 on_finish: Callable[[RequestContext], None] | None = None) -> None:
        self.app = app
        self.on_finish = on_finish
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes or max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given_id, declared, content_type = _scan_headers(scope)
        request_id = _request_id(given_id)
        ctx = RequestContext(request_id, scope["method"], scope["path"])
        scope.setdefault("state", {})["ctx"] = ctx
        header = (b"x-request-id", request_id.encode())

        # knowledge-base uploads may be far larger than any chat request
        limit = self.max_upload_bytes if _is_upload(scope) else self.max_body_bytes
        if declared is not None and declared > limit:
            await self._too_large(ctx, send, header, limit)
            return

        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise PayloadTooLargeError(_too_large_message(limit))
            return message

        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced
            if too_large:
                # a chunked body went over the limit while a route read it: whatever the
                # route made of that (FastAPI answers 400 "error parsing the body"), the
                # client gets the 413 it would have had with a Content-Length
                if not replaced:
                    replaced = True
                    await self._reject(ctx, send, header, PayloadTooLargeError(
                        _too_large_message(limit)))
                return
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._finish(ctx)

        app_receive: Receive = limited_receive
        if _json_checked_here(scope, content_type):
            try:
                body = await _read_body(limited_receive)
                parse_json_body(body)
            except GatewayError as exc:  # 413 while reading, 400 for what parsing found
                await self._reject(ctx, send, header, exc)
                return
            app_receive = _replay(body, receive)

        try:
            await self.app(scope, app_receive, send_wrapper)
        except Exception as exc:
            ctx.status = ctx.status or 500
            ctx.error = ctx.error or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            # also when the client left a stream: Starlette then cancels it and returns
            # without a last body message, and the request's lease must still be settled
            self._finish(ctx)

    def _finish(self, ctx: RequestContext) -> None:
        """Metrics and the one structured log line, once, when the request is over."""
        if ctx.finished:
            return
        ctx.finished = True
        route = _route_label(ctx.path)
        model, backend = ctx.model or "", ctx.backend or ""
        self.metrics.requests.labels(route, model, backend, str(ctx.status)).inc()
        self.metrics.latency.labels(route, model).observe(ctx.elapsed())
        if self.on_finish is not None:
            self.on_finish(ctx)
        if log.isEnabledFor(logging.INFO):
            record: dict[str, Any] = ctx.log_record()
            log.info(json.dumps(record, separators=(",", ":")))


    async def _too_large(
        self, ctx: RequestContext, send: Send, header: tuple[bytes, bytes], limit: int
    ) -> None:
        await self._reject(ctx, send, header, PayloadTooLargeError(_too_large_message(limit)))

    async def _reject(self, ctx: RequestContext, send: Send, header: tuple[bytes, bytes],
                      error: GatewayError) -> None:
        body = json.dumps(error.to_body()).encode()
        ctx.status, ctx.error = error.status_code, error.message
        await send({
            "type": "http.response.start", "status": error.status_code,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), header],
        })
        await send({"type": "http.response.body", "body": body})
        self._finish(ctx)


# routes that read their JSON with ``parse_json_body`` themselves (the hot path reads the
# body once); every other JSON body is checked here before its route sees it
_READS_ITS_OWN_JSON = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def _json_checked_here(scope: Scope, content_type: bytes | None) -> bool:
    if (content_type is None or scope["method"] not in ("POST", "PUT", "PATCH")
            or scope["path"] in _READS_ITS_OWN_JSON):
        return False
    return content_type.split(b";")[0].strip().lower() == b"application/json"


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, as one message; then the client's own messages (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replayed


def _too_large_message(limit: int) -> str:
    return f"request body exceeds the limit of {limit} bytes"


def _is_upload(scope: Scope) -> bool:
    path: str = scope["path"]
    return (scope["method"] == "POST" and path.startswith("/v1/knowledge_bases/")
            and path.endswith("/documents"))


def _route_label(path: str) -> str:
    # a fixed label set keeps the series count bounded whatever paths clients try
    if path.startswith("/admin/"):
        return "/admin"
    if path.startswith("/v1/knowledge_bases"):
        return "/v1/knowledge_bases"
    if path.startswith("/v1/conversations"):
        return "/v1/conversations"
    return path if path in _ROUTES else "other"


_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                     "/v1/models", "/health",
                     "/ready", "/metrics"})


def _scan_headers(scope: Scope) -> tuple[bytes | None, int | None, bytes | None]:
    """The first x-request-id, content-length and content-type, in one pass."""
    request_id = length = content_type = None
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if length is None:
                try:
                    length = int(value)
                except ValueError:
                    length = -1  # unreadable: the body is counted as it arrives
        elif name == b"content-type":
            content_type = content_type or value
        elif name == b"x-request-id":
            request_id = request_id or value
    return request_id, (None if length == -1 else length), content_type


def _request_id(given: bytes | None) -> str:
    if given is not None:
        candidate = given.decode("latin-1")
        if _SAFE_ID.match(candidate):
            return candidate
    return uuid.uuid4().hex



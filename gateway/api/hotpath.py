"""The two proxy routes, served without FastAPI's router and dependency machinery.

Profiled under load, routing and dependency solving cost about a third of the gateway's
CPU per proxied request, more than the gateway's own work. This middleware sits just
inside RequestMiddleware and answers ``POST /v1/chat/completions`` and
``POST /v1/completions`` itself, with the same endpoint functions and the same OpenAI
error bodies; every other request goes on to FastAPI (which also keeps documenting the
two routes in its OpenAPI schema).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError

Endpoint = Callable[[Request], Awaitable[Response]]


class HotPathMiddleware:
    def __init__(self, app: ASGIApp, routes: dict[str, Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (self.routes.get(scope["path"])
                    if scope["type"] == "http" and scope["method"] == "POST" else None)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response: Response = await endpoint(request)
        except GatewayError as exc:
            response = error_response(scope, exc)
        await response(scope, receive, send)


def error_response(scope: Scope, exc: GatewayError) -> JSONResponse:
    """The OpenAI error body for ``exc``, noted in the request's log line."""
    ctx = scope.get("state", {}).get("ctx")
    if ctx is not None:
        ctx.error = exc.message
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers or None)

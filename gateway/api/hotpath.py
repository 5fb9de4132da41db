"""The two proxy routes, answered before FastAPI's middleware stack and router.

Profiled under load, FastAPI's routing and dependency solving cost about a third of the
gateway's CPU per proxied request, and its middleware stack (server errors, telemetry,
its own body limit, ours) a few percent more, all for two routes that need none of it.
``Gateway`` is the FastAPI app with one change: ``POST /v1/chat/completions`` and
``POST /v1/completions`` go straight to ``RequestMiddleware`` around ``HotRoutes``
(request id, body limit, the log line and metrics, exactly as every other route gets
them), which calls the same endpoint functions and answers the same OpenAI error bodies,
a 500 included. Every other request, and the lifespan, go to FastAPI as before (which
also keeps documenting the two routes in its OpenAPI schema).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, error_body

log = logging.getLogger("ragate")

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """An ASGI app for the hot routes, inside RequestMiddleware (whose request context it
    reads): the endpoint's response, or its OpenAI error."""

    def __init__(self, routes: dict[str, Endpoint]) -> None:
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes[scope["path"]]
        try:
            try:
                response: Response = await endpoint(Request(scope, receive))
            except GatewayError as exc:
                response = error_response(scope, exc)
            await response(scope, receive, send)
        except Exception as exc:
            # what ServerErrorMiddleware does for every other route: a 500 in OpenAI's
            # shape if nothing was sent yet (RequestMiddleware notes the status it sent);
            # a stream already begun just ends
            log.exception("unhandled error")
            ctx = scope["state"]["ctx"]
            if ctx.status is not None:
                raise
            ctx.error = f"{type(exc).__name__}: {exc}"
            await internal_error()(scope, receive, send)


class Gateway(FastAPI):
    """FastAPI, with the hot routes answered by ``hot`` (see ``use_hot_path``)."""

    hot: ASGIApp | None = None
    hot_paths: frozenset[str] = frozenset()

    def use_hot_path(self, routes: dict[str, Endpoint],
                     wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        """``wrap`` puts the gateway's own request middleware around the hot routes."""
        self.hot = wrap(HotRoutes(routes))
        self.hot_paths = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.hot is not None and scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in self.hot_paths):
            scope["app"] = self  # what Starlette sets: endpoints find the services there
            await self.hot(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def error_response(scope: Scope, exc: GatewayError) -> JSONResponse:
    """The OpenAI error body for ``exc``, noted in the request's log line."""
    ctx = scope.get("state", {}).get("ctx")
    if ctx is not None:
        ctx.error = exc.message
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers or None)


def internal_error() -> JSONResponse:
    return JSONResponse(error_body("internal error", "api_error", None, "internal_error"),
                        status_code=500)

"""``create_app(settings)``: the FastAPI app, its error handlers and its lifespan."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from gateway.api import (
    admin,
    conversations,
    embeddings,
    health,
    keys,
    knowledge,
    me,
    openai,
    usage,
)
from gateway.api.hotpath import Gateway, error_response, internal_error
from gateway.auth import KeyRing
from gateway.backends import BackendPool
from gateway.backends.registry import open_registry
from gateway.chat.pipeline import ChatPipeline
from gateway.chat.summary import pool_completer
from gateway.chat.upstream import Upstream
from gateway.console import console_app
from gateway.conversations.factory import open_store
from gateway.conversations.service import ConversationService
from gateway.errors import ConfigError, GatewayError, error_body, from_validation_errors
from gateway.knowledge.jobs import job_board
from gateway.knowledge.service import KnowledgeService
from gateway.metrics import Metrics
from gateway.middleware import RequestMiddleware
from gateway.services import Services
from gateway.session_hints import RedisSessionHints
from gateway.settings import Settings, StoreKind, is_loopback
from gateway.tenants.accounting import open_tenancy
from gateway.tenants.store import open_key_store

log = logging.getLogger("ragate")

_STATUS_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
    413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
}


def check_exposure(settings: Settings, *, warn: bool = True, managed_keys: bool = False
                   ) -> None:
    """Refuse an open gateway on a public interface; say so when open on loopback. Keys
    in the config or in the managed key store turn auth on."""
    if settings.auth_enabled or managed_keys:
        return
    if not is_loopback(settings.server.host):
        raise ConfigError(
            f"no API keys are configured and the gateway would listen on "
            f"{settings.server.host}: configure auth.keys (or RAGATE_AUTH__KEYS), "
            f"or bind to 127.0.0.1"
        )
    if warn:
        log.warning("auth disabled: no API keys configured; the gateway is open because it "
                    "listens on %s only", settings.server.host)


def knowledge_enabled(settings: Settings) -> bool:
    """On when asked, else when the rag extra is installed."""
    if settings.knowledge.enabled is not None:
        return settings.knowledge.enabled
    return all(importlib.util.find_spec(m) is not None
               for m in ("rag", "faiss", "sentence_transformers", "bm25s"))


def create_app(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Gateway:
    """Build the app. ``transport`` replaces the network for every backend (tests)."""
    metrics = Metrics()
    services = Services(
        settings=settings,
        keys=KeyRing(settings.auth.keys, cache_ttl_s=settings.auth.cache_ttl_s),
        pool=BackendPool(settings.pool, settings.models, transport=transport),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            key_store = await open_key_store(settings)
            stack.push_async_callback(key_store.close)
            services.keys.store = key_store
            await services.keys.start()
            services.tenancy = await open_tenancy(settings, metrics)
            stack.push_async_callback(services.tenancy.close)
            check_exposure(settings, managed_keys=services.keys.enabled)
            services.registry = await open_registry(settings, services.pool)
            await services.registry.start()  # the admin's changes, before the first probe
            stack.push_async_callback(services.registry.close)
            await services.pool.start()
            stack.push_async_callback(services.pool.close)
            store = await open_store(settings)
            stack.push_async_callback(store.close)
            services.conversations = ConversationService(store, settings.conversations)
            if settings.conversations.store is StoreKind.REDIS:
                services.hints = RedisSessionHints.from_url(
                    settings.conversations.redis_url, settings.conversations.key_prefix)
                stack.push_async_callback(services.hints.close)
            await services.load_counters()
            if knowledge_enabled(settings):
                knowledge = KnowledgeService(settings.knowledge, settings.knowledge_root,
                                             job_board(settings))
                await knowledge.start()
                stack.push_async_callback(knowledge.close)
                services.knowledge = knowledge
            services.chat_pipeline = ChatPipeline(
                pool=services.pool, model_config=services.model_config,
                counter_for=services.counter_for,
                upstream=Upstream(settings.pool, metrics, services.hints),
                metrics=metrics, conversations=services.conversations,
                knowledge=services.knowledge, knowledge_config=settings.knowledge,
                summarizer=pool_completer(services.pool, settings.pool),
                tenancy=services.tenancy,
            )
            if metrics.multiprocess:  # one of several workers: its gauges kept fresh
                stack.enter_context(_observing_backends(metrics, services.pool))
            # what start-up built lives as long as the process: out of the collector's
            # sight, its full collections stop walking it (they were the p99 at c=32)
            gc.collect()
            gc.freeze()
            yield

    app = Gateway(title="ragate", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    app.include_router(openai.router)
    app.include_router(embeddings.router)
    app.include_router(conversations.router)
    app.include_router(knowledge.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(usage.router)
    app.include_router(me.router)
    app.include_router(health.router)
    app.mount("/ui", console_app(), name="console")

    def request_middleware(app: ASGIApp) -> ASGIApp:
        return RequestMiddleware(
            app, max_body_bytes=settings.server.max_body_bytes, metrics=metrics,
            max_upload_bytes=settings.knowledge.max_upload_bytes, on_finish=services.finish)

    app.add_middleware(request_middleware)
    app.use_hot_path(
        {"/v1/chat/completions": openai.chat_completions, "/v1/completions": openai.completions},
        request_middleware)
    _install_error_handlers(app)
    return app


@contextmanager
def _observing_backends(metrics: Metrics, pool: BackendPool) -> Iterator[None]:
    """Every second, this worker's backend gauges (whichever worker answers /metrics
    reads the files of all); at exit, its live gauges leave the sum."""
    async def observe() -> None:
        while True:
            metrics.observe_backends(pool.backends.values())
            await asyncio.sleep(1.0)

    task = asyncio.get_running_loop().create_task(observe())
    try:
        yield
    finally:
        task.cancel()
        metrics.process_exit()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(request.scope, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.scope, from_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "api_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route for {request.method} {request.url.path}"
        return JSONResponse(error_body(message, type_, None, None), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return internal_error()

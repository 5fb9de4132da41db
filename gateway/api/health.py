"""Liveness, readiness and Prometheus metrics (unauthenticated, like most scrapers expect)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import ServicesDep
from gateway.errors import GatewayError

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


READY_TIMEOUT_S = 1.0  # a store slower than this to answer a ping is not ready


@router.get("/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    """200 when every model has a routable backend and every store answers; else 503
    with what is wrong (a balancer takes the replica out until it answers 200 again)."""
    models = {name: route.has_healthy_backend() for name, route in services.pool.models.items()}
    stores: dict[str, str] = {}
    if services.conversations is not None:
        stores["conversations"] = await _ping(services.conversations.store.ping())
    if services.knowledge is not None:
        stores["knowledge"] = await _ping(services.knowledge.ping())
        if services.knowledge.board.shared:  # uploads queue there (its own Redis, maybe)
            stores["jobs"] = await _ping(services.knowledge.board.ping())
    is_ready = (bool(models) and all(models.values())
                and all(state == "ok" for state in stores.values()))
    return JSONResponse(
        {"status": "ready" if is_ready else "not_ready", "models": models, "stores": stores},
        status_code=200 if is_ready else 503,
    )


async def _ping(check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, READY_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_S:g} s"
    except GatewayError as exc:
        return exc.message
    return "ok"


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    m = services.metrics
    m.observe_backends(services.pool.backends.values())
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)

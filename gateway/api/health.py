"""Liveness, readiness and Prometheus metrics (unauthenticated, like most scrapers expect)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    models = {name: route.has_healthy_backend() for name, route in services.pool.models.items()}
    is_ready = bool(models) and all(models.values())
    return JSONResponse(
        {"status": "ready" if is_ready else "not_ready", "models": models},
        status_code=200 if is_ready else 503,
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    m = services.metrics
    m.observe_backends(services.pool.backends.values())
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)

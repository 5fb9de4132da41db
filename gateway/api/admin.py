"""Admin routes: list backends with health and load; add, drain and remove them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from gateway.api.deps import AdminPrincipal, ServicesDep
from gateway.backends.health import probe
from gateway.settings import BackendConfig

router = APIRouter(prefix="/admin", tags=["admin"])


class NewBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    backend: BackendConfig


def _listing(services: Any) -> dict[str, Any]:
    pool = services.pool
    return {
        "object": "list",
        "data": [
            {**b.describe(),
             "models": [r.name for r in pool.models.values()
                        if any(t.backend is b for t in r.targets)],
             "adapters": sorted({t.lora for r in pool.models.values() for t in r.targets
                                 if t.backend is b and t.lora})}
            for b in pool.backends.values()
        ],
    }


@router.get("/backends")
async def list_backends(services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    return _listing(services)


@router.post("/backends", status_code=201)
async def add_backend(new: NewBackend, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    backend = services.pool.add_backend(new.model, new.backend)
    await probe(backend, services.settings.pool.health_timeout_s)
    return backend.describe()


@router.post("/backends/{name}/drain")
async def drain_backend(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    return services.pool.drain(name).describe()


@router.post("/backends/{name}/undrain")
async def undrain_backend(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    return services.pool.undrain(name).describe()


@router.delete("/backends/{name}")
async def remove_backend(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    backend = services.pool.remove(name)
    return {"name": backend.name, "removed": True, "in_flight": backend.in_flight}

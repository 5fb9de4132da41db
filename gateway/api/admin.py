"""Admin routes: list backends with health and load; add, drain and remove them."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from gateway.api.deps import AdminPrincipal, ServicesDep
from gateway.backends.health import probe
from gateway.backends.registry import BackendRegistry
from gateway.settings import BackendConfig
from serving.supervisor import read_states

router = APIRouter(prefix="/admin", tags=["admin"])


class NewBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    backend: BackendConfig


def _listing(services: Any, supervised: dict[str, Any]) -> dict[str, Any]:
    pool = services.pool
    return {
        "object": "list",
        "registry": _registry(services).describe(),
        "data": [
            {**b.describe(),
             **({"supervisor": supervised[b.name]} if b.name in supervised else {}),
             "models": [r.name for r in pool.models.values()
                        if any(t.backend is b for t in r.targets)],
             "adapters": sorted({t.lora for r in pool.models.values() for t in r.targets
                                 if t.backend is b and t.lora})}
            for b in pool.backends.values()
        ],
    }


def _registry(services: Any) -> BackendRegistry:
    assert services.registry is not None, "opened in the app's lifespan"
    return services.registry


@router.get("/backends")
async def list_backends(services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    # the supervisor (in `ragate serve`'s parent) reports local backends through a file
    supervised = await anyio.to_thread.run_sync(read_states)
    return _listing(services, supervised)


@router.post("/backends", status_code=201)
async def add_backend(new: NewBackend, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    backend = await _registry(services).add(new.model, new.backend)
    await probe(backend, services.settings.pool.health_timeout_s)
    return backend.describe()


@router.post("/backends/{name}/drain")
async def drain_backend(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    return (await _registry(services).drain(name)).describe()


@router.post("/backends/{name}/undrain")
async def undrain_backend(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    return (await _registry(services).drain(name, drained=False)).describe()


@router.delete("/backends/{name}")
async def remove_backend(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    backend = await _registry(services).remove(name)
    return {"name": backend.name, "removed": True, "in_flight": backend.in_flight}

"""Admin routes for managed API keys and teams (``/admin/keys``, ``/admin/teams``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import AdminPrincipal, ServicesDep
from gateway.errors import StoreUnavailableError
from gateway.services import Services
from gateway.settings import Limits, Role
from gateway.tenants.models import Team, now
from gateway.tenants.service import KeyService

router = APIRouter(prefix="/admin", tags=["admin"])


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=128)
    role: Role = Role.CHAT
    team: str | None = None
    models: list[str] | None = None
    knowledge_bases: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    expires_at: float | None = Field(default=None, description="Unix time")
    expires_in_s: float | None = Field(default=None, gt=0)
    metadata: dict[str, Any] = Field(default_factory=dict)


class KeyChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str | None = Field(default=None, min_length=1, max_length=128)
    role: Role | None = None
    team: str | None = None
    models: list[str] | None = None
    knowledge_bases: list[str] | None = None
    limits: Limits | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] | None = None


class TeamBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    knowledge_bases: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    metadata: dict[str, Any] = Field(default_factory=dict)


def key_service(services: Services) -> KeyService:
    store = services.keys.store
    if store is None:
        raise StoreUnavailableError("the key store is not open")
    return KeyService(store, services.keys, {m.name for m in services.settings.models})


@router.post("/keys", status_code=201)
async def create_key(body: NewKey, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    """The new key, with its secret: shown this once, only its digest is kept."""
    fields = body.model_dump(exclude={"expires_in_s"})
    fields["limits"] = body.limits
    if body.expires_in_s is not None:
        fields["expires_at"] = now() + body.expires_in_s
    key, secret = await key_service(services).create(**fields)
    return {**key.to_api(), "secret": secret}


@router.get("/keys")
async def list_keys(services: ServicesDep, _: AdminPrincipal, owner: str | None = None,
                    team: str | None = None) -> dict[str, Any]:
    keys = await key_service(services).list(owner=owner, team=team)
    return {"object": "list", "data": [k.to_api() for k in keys]}


@router.get("/keys/{key_id}")
async def get_key(key_id: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    return (await key_service(services).get(key_id)).to_api()


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyChanges, services: ServicesDep,
                     _: AdminPrincipal) -> dict[str, Any]:
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    return (await key_service(services).update(key_id, changes)).to_api()


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    """Revoked, not deleted: its usage stays attributable."""
    return (await key_service(services).revoke(key_id)).to_api()


@router.get("/teams")
async def list_teams(services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    teams = await key_service(services).store.list_teams()
    return {"object": "list", "data": [t.to_api() for t in teams]}


@router.put("/teams/{name}")
async def put_team(name: str, body: TeamBody, services: ServicesDep,
                   _: AdminPrincipal) -> dict[str, Any]:
    team = Team(name=name, knowledge_bases=body.knowledge_bases, limits=body.limits,
                metadata=body.metadata)
    return (await key_service(services).put_team(team)).to_api()


@router.get("/teams/{name}")
async def get_team(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    return (await key_service(services).get_team(name)).to_api()


@router.delete("/teams/{name}")
async def delete_team(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    await key_service(services).delete_team(name)
    return {"id": name, "object": "team.deleted", "deleted": True}

"""``GET /v1/me``: who the calling key is and what it may use, so that a client (the
console) shows only what the key may do; the server still checks every request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import ChatPrincipal, ServicesDep
from gateway.tenants.grants import models_knowledge_bases

router = APIRouter(tags=["keys"])


@router.get("/v1/me")
async def me(services: ServicesDep, principal: ChatPrincipal) -> dict[str, Any]:
    models = sorted(name for name in services.pool.models if principal.may_use_model(name))
    bases = set(principal.knowledge_bases) | models_knowledge_bases(services.settings.models,
                                                                     principal)
    return {
        "object": "principal", "owner": principal.owner, "role": principal.role.value,
        "team": principal.team, "key_id": principal.key_id, "models": models,
        "knowledge_bases": None if principal.is_admin else sorted(bases),
        "limits": principal.limits.model_dump(exclude_none=True),
        "team_limits": principal.team_limits.model_dump(exclude_none=True),
        "expires_at": principal.expires_at,
        "features": {
            "knowledge": services.knowledge is not None,
            "usage": services.tenancy is not None and services.tenancy.usage is not None,
            "managed_keys": services.keys.store is not None,
        },
    }

"""Usage: ``GET /v1/usage`` for the calling key, ``GET /admin/usage`` for everyone."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from gateway.api.deps import AdminPrincipal, ChatPrincipal, ServicesDep
from gateway.errors import FeatureDisabledError
from gateway.services import Services
from gateway.tenants.usage import UsageStore, days_back, group

router = APIRouter(tags=["usage"])
Days = Query(default=30, ge=1, le=400, description="UTC days back from today")


def _store(services: Services) -> UsageStore:
    if services.tenancy is None or services.tenancy.usage is None:
        raise FeatureDisabledError("usage records", "usage_disabled")
    return services.tenancy.usage


@router.get("/v1/usage")
async def own_usage(services: ServicesDep, principal: ChatPrincipal,
                    days: int = Days) -> dict[str, Any]:
    """The calling key's usage: totals, per day and per model."""
    rows = await _store(services).rows(days_back(days), key_id=principal.key_id)
    total = group(rows, "key_id")
    return {"object": "usage", "key_id": principal.key_id, "owner": principal.owner,
            "team": principal.team, "days": days,
            "total": total[0] if total else None,
            "by_day": sorted(group(rows, "day"), key=lambda r: r["day"]),
            "by_model": group(rows, "model")}


@router.get("/admin/usage")
async def all_usage(services: ServicesDep, _: AdminPrincipal, days: int = Days,
                    group_by: Literal["owner", "team", "key_id", "model", "day"] = "team"
                    ) -> dict[str, Any]:
    rows = await _store(services).rows(days_back(days))
    return {"object": "list", "group_by": group_by, "days": days,
            "data": group(rows, group_by)}

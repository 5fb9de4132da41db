"""FastAPI dependencies: the app's services, the request context, the caller's principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import KeyRing, Principal
from gateway.context import RequestContext
from gateway.services import Services
from gateway.settings import Role

# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` ones in a thread
# pool, which cost three thread round trips per request on the hot path.


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def context_of(request: Request) -> RequestContext:
    ctx = request.scope.get("state", {}).get("ctx")
    if ctx is None:  # app mounted without RequestMiddleware (never in create_app)
        ctx = RequestContext("-", request.method, request.url.path)
    return ctx  # type: ignore[no-any-return]


async def services(request: Request) -> Services:
    return services_of(request)


async def _principal(request: Request, role: Role) -> Principal:
    principal = await services_of(request).keys.authenticate(request.headers.get("authorization"))
    ctx = context_of(request)
    ctx.principal, ctx.team, ctx.key_id = principal.owner, principal.team, principal.key_id
    return KeyRing.require(principal, role)


async def chat_principal_of(request: Request) -> Principal:
    return await _principal(request, Role.CHAT)


async def chat_principal(request: Request) -> Principal:
    return await _principal(request, Role.CHAT)


async def kb_admin_principal(request: Request) -> Principal:
    return await _principal(request, Role.KB_ADMIN)


async def admin_principal(request: Request) -> Principal:
    return await _principal(request, Role.ADMIN)


ServicesDep = Annotated[Services, Depends(services)]
ChatPrincipal = Annotated[Principal, Depends(chat_principal)]
KbAdminPrincipal = Annotated[Principal, Depends(kb_admin_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]

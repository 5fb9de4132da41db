"""OpenAI-compatible routes: models, chat completions, legacy completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from gateway.api.deps import ChatPrincipal, ServicesDep, chat_principal_of, context_of, services_of
from gateway.errors import BadRequestError, from_validation_errors
from gateway.json_body import parse_json_body
from gateway.schemas import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from gateway.tenants.grants import model_route

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", response_model=ModelList)
async def list_models(services: ServicesDep, principal: ChatPrincipal) -> ModelList:
    return ModelList(data=[
        ModelCard(id=r.name, created=r.created, owned_by=r.owned_by)
        for r in services.pool.models.values() if principal.may_use_model(r.name)
    ])


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, services: ServicesDep, principal: ChatPrincipal
                    ) -> ModelCard:
    route = model_route(services.pool, principal, model_id)
    return ModelCard(id=route.name, created=route.created, owned_by=route.owned_by)


async def read_json(request: Request, model: type[BaseModel]) -> tuple[dict[str, Any], Any]:
    """The client's JSON object and its validated view; 400 in OpenAI's shape otherwise."""
    data = parse_json_body(await request.body())
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object", code="invalid_json")
    try:
        return data, model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from exc


_CHAT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": ChatCompletionRequest.model_json_schema()}}}}
_COMPLETION_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": CompletionRequest.model_json_schema()}}}}


@router.post("/chat/completions", openapi_extra=_CHAT_BODY)
async def chat_completions(request: Request) -> Response:
    # the hot path resolves its dependencies inline: FastAPI's dependency solving costs
    # more per request than everything else the gateway does before the backend call
    services, ctx = services_of(request), context_of(request)
    principal = await chat_principal_of(request)
    data, body = await read_json(request, ChatCompletionRequest)
    return await services.chat.chat(ctx, principal, data, body, request.headers)


@router.post("/completions", openapi_extra=_COMPLETION_BODY)
async def completions(request: Request) -> Response:
    services, ctx = services_of(request), context_of(request)
    principal = await chat_principal_of(request)
    data, body = await read_json(request, CompletionRequest)
    return await services.chat.completion(ctx, principal, data, body)

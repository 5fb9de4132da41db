"""OpenAI-compatible routes: models, chat completions, legacy completions."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from gateway.api.deps import ChatPrincipal, ServicesDep, chat_principal_of, context_of, services_of
from gateway.auth import Principal
from gateway.backends.pool import ModelRoute
from gateway.context import RequestContext
from gateway.conversations.service import ChatTurn
from gateway.errors import BadRequestError
from gateway.knowledge.context import Sources, inject_context, latest_user_text
from gateway.routing import Policy, RoutingRequest
from gateway.schemas import (
    OPENAI_CHAT_PARAMS,
    OPENAI_COMPLETION_PARAMS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    RagateOptions,
)
from gateway.services import Services
from gateway.settings import ContextMode, KnowledgeUse, ModelConfig
from gateway.tokens import message_text

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", response_model=ModelList)
async def list_models(services: ServicesDep, _: ChatPrincipal) -> ModelList:
    return ModelList(data=[
        ModelCard(id=r.name, created=r.created, owned_by=r.owned_by)
        for r in services.pool.models.values()
    ])


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, services: ServicesDep, _: ChatPrincipal) -> ModelCard:
    route = services.pool.route(model_id)
    return ModelCard(id=route.name, created=route.created, owned_by=route.owned_by)


async def read_json(request: Request, model: type[BaseModel]) -> tuple[dict[str, Any], Any]:
    """The client's JSON object and its validated view; 400 in OpenAI's shape otherwise."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object", code="invalid_json")
    try:
        return data, model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise BadRequestError(
            f"{param}: {first['msg']}" if param else first["msg"], param=param,
            code="invalid_value" if first["type"] != "missing" else "missing_required_parameter",
        ) from exc


_CHAT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": ChatCompletionRequest.model_json_schema()}}}}
_COMPLETION_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": CompletionRequest.model_json_schema()}}}}


@router.post("/chat/completions", openapi_extra=_CHAT_BODY)
async def chat_completions(request: Request) -> Response:
    # the hot path resolves its dependencies inline: FastAPI's dependency solving costs
    # more per request than everything else the gateway does before the backend call
    services, ctx, principal = services_of(request), context_of(request), chat_principal_of(request)
    data, body = await read_json(request, ChatCompletionRequest)
    route = services.pool.route(body.model)
    conversation_id = body.conversation_id or request.headers.get("x-conversation-id")
    turn = None
    if conversation_id:
        turn = await _begin_turn(services, principal, conversation_id, body.model, data)
        data = {**data, "messages": turn.prompt}
        ctx.extra.update(conversation_id=conversation_id, prefix_reuse=turn.reuse_tokens,
                         counted_prompt_tokens=turn.prompt_tokens)
    use = knowledge_use(services.model_config(body.model), body.ragate,
                        turn.conversation.metadata if turn is not None else {})
    sources = None
    if use.knowledge_base:
        try:
            data["messages"], sources = await retrieve_into(services, use, data["messages"])
        except BaseException:
            if turn is not None:
                await turn.release()
            raise
        ctx.extra.update(knowledge_base=use.knowledge_base, passages=len(sources.passages))
    # sticky routing keys on the stored conversation, else a stateless client's own session
    # (X-Session-Id, or OpenAI's `user` field)
    session = conversation_id or request.headers.get("x-session-id") or body.user
    routing = await _routing_request(services, route, ctx, session, data["messages"])
    response = await services.proxy.forward(
        ctx, route, "/v1/chat/completions", data,
        openai_params=OPENAI_CHAT_PARAMS, routing=routing, turn=turn,
        extras={"sources": sources.to_api()} if sources is not None else None,
    )
    if session and ctx.backend and ctx.backend != routing.hint:
        await services.hints.set(route.name, session, ctx.backend)
    return response


def knowledge_use(model: ModelConfig, options: RagateOptions | None,
                  conversation: dict[str, str]) -> KnowledgeUse:
    """The request's options over the conversation's knowledge base over the model's."""
    use = model.knowledge
    if conversation.get("knowledge_base"):
        use = use.model_copy(update={"knowledge_base": conversation["knowledge_base"]})
    if options is not None:
        use = use.model_copy(update=options.model_dump(exclude_none=True))
    return use


async def retrieve_into(services: Services, use: KnowledgeUse, messages: list[dict[str, Any]]
                        ) -> tuple[list[dict[str, Any]], Sources]:
    """Search the knowledge base for the latest user message; put what fits in the prompt."""
    if services.knowledge is None:
        raise BadRequestError("knowledge bases are not enabled on this gateway",
                              param="ragate.knowledge_base", code="knowledge_disabled")
    assert use.knowledge_base is not None
    query = latest_user_text(messages)
    passages = [] if not query else await services.knowledge.search(
        use.knowledge_base, query, top_k=use.top_k, score_threshold=use.score_threshold,
        budget=use.max_context_chars)
    config = services.settings.knowledge
    injected = inject_context(messages, passages, ContextMode(use.mode),
                              system_template=config.system_template,
                              turn_template=config.turn_template)
    return injected, Sources(use.knowledge_base, passages)


async def _routing_request(services: Services, route: ModelRoute, ctx: RequestContext,
                           session: str | None, messages: list[dict[str, Any]]) -> RoutingRequest:
    """What the model's policy needs: the prompt text only for cache-aware policies, and
    the session's last backend (shared across replicas) for sticky ones."""
    prompt = first = first_user = hint = None
    if route.policy.uses_prompt:
        prompt = prompt_text(messages)
        first = message_text(messages[0]) if messages else ""
        first_user = next((message_text(m) for m in messages if m.get("role") == "user"), None)
    if session and route.policy_name in STICKY:
        hint = await services.hints.get(route.name, session)
    return RoutingRequest(model=route.name, session_key=session, prompt=prompt,
                          first_message=first, first_user=first_user, hint=hint,
                          request_id=ctx.request_id)


STICKY = frozenset({Policy.SESSION, Policy.CACHE_AWARE})


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """A stable rendering of the messages, standing in for the backend's chat template."""
    return "".join(f"<|{m.get('role')}|>\n{message_text(m)}\n" for m in messages)


async def _begin_turn(services: Services, principal: Principal, conversation_id: str,
                      model: str, data: dict[str, Any]) -> ChatTurn:
    if services.conversations is None:
        raise BadRequestError("conversations are not enabled on this gateway",
                              param="conversation_id")
    config = services.model_config(model)
    summary_model = config.truncation.summary_model or model

    async def complete(messages: list[dict[str, Any]], max_tokens: int) -> str:
        return await services.complete(summary_model, messages, max_tokens)

    return await services.conversations.begin(
        principal, conversation_id, config, data["messages"], services.counter_for(model),
        complete,
    )


@router.post("/completions", openapi_extra=_COMPLETION_BODY)
async def completions(request: Request) -> Response:
    services, ctx = services_of(request), context_of(request)
    chat_principal_of(request)
    data, body = await read_json(request, CompletionRequest)
    route = services.pool.route(body.model)
    return await services.proxy.forward(
        ctx, route, "/v1/completions", data,
        openai_params=OPENAI_COMPLETION_PARAMS, routing=RoutingRequest(model=body.model),
    )
